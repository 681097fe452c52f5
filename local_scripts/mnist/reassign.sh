#!/bin/bash
# Optional on MNIST: relabels the filtered images with a better model (e.g.
# the student of run_offline.sh), keeping the images. This is
# local_scripts/svhn/reassign.sh with TASK_NAME=mnist and the MNIST paths of
# defaults.sh. Train on the result with
#   UNLABEL_DIR=data/mnist/predict/reassign MODEL_DIR=ckpt/mnist/student_reassign \
#     bash local_scripts/mnist/run_offline.sh
#
# Environment (defaults in brackets; see also defaults.sh):
#   REASSIGN_CKPT  model_dir or checkpoint prefix of the relabeling model
#                  [ckpt/mnist/student]
#   DATA_ROOT      prediction root [data/mnist/predict]
#   INPUT_DIR      filtered records [$DATA_ROOT/filter_data/data]
#   OUTPUT_DIR     relabeled records [$DATA_ROOT/reassign]
#   NUM_SHARDS     number of filtered files [4]
#   BATCH_SIZE     images per prediction batch [500]
#   GPUS, NUM_WORKERS, PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended to every Python call.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/common.sh

REASSIGN_CKPT="${REASSIGN_CKPT:-ckpt/mnist/student}"
export TASK_NAME REASSIGN_CKPT DATA_ROOT NUM_SHARDS BATCH_SIZE PYTHON
exec bash local_scripts/svhn/reassign.sh "$@"
