#!/bin/bash
# Step 2 on MNIST: the teacher predicts class probabilities for every
# unlabeled digit (local_scripts/steps/predict.sh); finished shards are
# skipped.
#
#   bash local_scripts/mnist/predict.sh [flags...]
#   DRY_RUN=1 bash local_scripts/mnist/predict.sh   # print the commands
#
# Reads   $UNLABEL_DIR/extra-%05d-of-%05d
# Writes  $DATA_ROOT/predict_label/, $DATA_ROOT/info/
#
# Environment (defaults in brackets; settings in defaults.sh):
#   TEACHER_CKPT   teacher model_dir or checkpoint prefix [ckpt/mnist/teacher]
#   TEACHER_MODEL  architecture, used if TEACHER_CKPT has no model_params.txt
#                  [efficientnet-b0]
#   DATA_DIR       prepro.sh's output [data/mnist/proc]
#   UNLABEL_DIR    unlabeled records [$DATA_DIR/unlabeled]
#   NUM_SHARDS     number of unlabeled files [defaults.sh]
#   DATA_ROOT      output root [data/mnist/predict]
#   LOG_DIR        worker logs [$DATA_ROOT/logs]
#   BATCH_SIZE     images per prediction batch [defaults.sh]
#   PREDICT_FLAGS  flags of the prediction calls [empty]
#   EXTRA_FLAGS    your flags for every main.py call, after PREDICT_FLAGS
#   GPUS, NUM_WORKERS, DRY_RUN   see local_scripts/common.sh
#   PYTHON         interpreter [.venv/bin/python if present, else python]
# Arguments are appended to every Python call; a flag given twice keeps
# its last value.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/steps/predict.sh "$@"
