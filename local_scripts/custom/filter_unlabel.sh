#!/bin/bash
# Step 3: filters by confidence and balances the classes (pass 1 | 0).
# Your own images (local_scripts/steps/filter_unlabel.sh, settings in defaults.sh;
# docs/own_data.md).
#
#   bash local_scripts/custom/filter_unlabel.sh [flags...]
#   DRY_RUN=1 bash local_scripts/custom/filter_unlabel.sh   # print the commands
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/custom/defaults.sh
source local_scripts/steps/filter_unlabel.sh "$@"
