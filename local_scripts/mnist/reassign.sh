#!/bin/bash
# Optional on MNIST: relabels the filtered images with a better model (e.g.
# the student of run_offline.sh), keeping the images (local_scripts/steps/
# reassign.sh). Train on the result with
#   UNLABEL_DIR=data/mnist/predict/reassign MODEL_DIR=ckpt/mnist/student_reassign \
#     bash local_scripts/mnist/run_offline.sh
#
#   DRY_RUN=1 bash local_scripts/mnist/reassign.sh   # print the commands
#
# Environment (defaults in brackets; settings in defaults.sh):
#   REASSIGN_CKPT   model_dir or checkpoint prefix of the relabeling model
#                   [ckpt/mnist/student]
#   REASSIGN_MODEL  its architecture, used if it has no model_params.txt
#                   [efficientnet-b0]
#   DATA_ROOT       prediction root [data/mnist/predict]
#   INPUT_DIR       filtered records [$DATA_ROOT/filter_data/data]
#   OUTPUT_DIR      relabeled records [$DATA_ROOT/reassign]
#   NUM_SHARDS      number of filtered files [defaults.sh]
#   LOG_DIR         worker logs [$DATA_ROOT/logs]
#   BATCH_SIZE      images per prediction batch [defaults.sh]
#   PREDICT_FLAGS   flags of the prediction calls [empty]
#   EXTRA_FLAGS     your flags for every main.py call, after PREDICT_FLAGS
#   GPUS, NUM_WORKERS, DRY_RUN   see local_scripts/common.sh
#   PYTHON          interpreter [.venv/bin/python if present, else python]
# Arguments are appended to every Python call; a flag given twice keeps
# its last value.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/steps/reassign.sh "$@"
