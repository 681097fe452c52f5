#!/bin/bash
# Step 3 on MNIST: filters the teacher's predictions by confidence and
# balances the classes, in two passes:
#
#   bash local_scripts/mnist/filter_unlabel.sh 1   # pass 1: per-shard statistics
#   bash local_scripts/mnist/filter_unlabel.sh 0   # pass 2: filtered, balanced data
#
# This is local_scripts/svhn/filter_unlabel.sh with the MNIST paths and
# settings of defaults.sh: NUM_IMAGE images per class (5,000: about what
# each digit has among the 54,000 unlabeled images), confidence >= 0.3.
#
# Environment (defaults in brackets; see also defaults.sh):
#   UNLABEL_DIR    unlabeled records [$DATA_DIR/unlabeled = data/mnist/proc/unlabeled]
#   NUM_SHARDS     number of unlabeled files [4]
#   DATA_ROOT      prediction root of predict.sh [data/mnist/predict]
#   NUM_IMAGE      target images per class [5000]
#   MIN_THRESHOLD  lowest confidence kept [0.3]
#   NUM_WORKERS    parallel CPU workers [number of CPUs, at most NUM_SHARDS]
#   PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments after the pass number are appended to every Python call.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/common.sh

UNLABEL_DIR="${UNLABEL_DIR:-${RAW_UNLABEL_DIR}}"
if [[ -z "${GPUS:-}" && -z "${NUM_WORKERS:-}" ]]; then
  # Filtering is mostly process start-up and file reading: one worker per CPU.
  NUM_WORKERS=$(nproc 2>/dev/null || echo 1)
  ((NUM_WORKERS <= NUM_SHARDS)) || NUM_WORKERS=${NUM_SHARDS}
  export NUM_WORKERS
fi
export UNLABEL_DIR FILE_PREFIX NUM_SHARDS DATA_ROOT NUM_IMAGE MIN_THRESHOLD PYTHON
exec bash local_scripts/svhn/filter_unlabel.sh "$@"
