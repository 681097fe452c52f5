#!/bin/bash
# Relabels the filtered images with the student.
# Your own images (local_scripts/steps/reassign.sh, settings in defaults.sh;
# docs/own_data.md).
#
#   bash local_scripts/custom/reassign.sh [flags...]
#   DRY_RUN=1 bash local_scripts/custom/reassign.sh   # print the commands
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/custom/defaults.sh
source local_scripts/steps/reassign.sh "$@"
