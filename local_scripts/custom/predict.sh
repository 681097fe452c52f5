#!/bin/bash
# Step 2: the teacher predicts every unlabeled image.
# Your own images (local_scripts/steps/predict.sh, settings in defaults.sh;
# docs/own_data.md).
#
#   bash local_scripts/custom/predict.sh [flags...]
#   DRY_RUN=1 bash local_scripts/custom/predict.sh   # print the commands
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/custom/defaults.sh
source local_scripts/steps/predict.sh "$@"
