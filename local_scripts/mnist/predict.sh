#!/bin/bash
# Step 2 on MNIST: the teacher predicts class probabilities for every
# unlabeled digit. This is local_scripts/svhn/predict.sh with TASK_NAME=mnist
# and the MNIST paths of defaults.sh; finished shards are skipped.
#
# Reads   $UNLABEL_DIR/extra-%05d-of-%05d
# Writes  $DATA_ROOT/predict_label/, $DATA_ROOT/info/
#
# Environment (defaults in brackets; see also defaults.sh):
#   TEACHER_CKPT   teacher model_dir or checkpoint prefix [ckpt/mnist/teacher]
#   UNLABEL_DIR    unlabeled records [$DATA_DIR/unlabeled = data/mnist/proc/unlabeled]
#   NUM_SHARDS     number of unlabeled files [4]
#   DATA_ROOT      output root [data/mnist/predict]
#   BATCH_SIZE     images per prediction batch [500]
#   GPUS, NUM_WORKERS, PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended to every Python call.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/common.sh

TEACHER_CKPT="${TEACHER_CKPT:-ckpt/mnist/teacher}"
UNLABEL_DIR="${UNLABEL_DIR:-${RAW_UNLABEL_DIR}}"
export TASK_NAME TEACHER_CKPT UNLABEL_DIR FILE_PREFIX NUM_SHARDS DATA_ROOT BATCH_SIZE PYTHON
exec bash local_scripts/svhn/predict.sh "$@"
