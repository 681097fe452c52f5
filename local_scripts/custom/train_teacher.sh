#!/bin/bash
# Step 1: trains the supervised teacher on the labeled images.
# Your own images (local_scripts/steps/train.sh, settings in defaults.sh;
# docs/own_data.md).
#
#   bash local_scripts/custom/train_teacher.sh [flags...]
#   DRY_RUN=1 bash local_scripts/custom/train_teacher.sh   # print the commands
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/custom/defaults.sh
source local_scripts/steps/train.sh teacher "$@"
