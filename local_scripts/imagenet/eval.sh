#!/bin/bash
# Top-1/top-5 accuracy of the latest checkpoint (EMA weights) of MODEL_DIR on
# the ImageNet validation set; results also go to $MODEL_DIR/eval_results.json.
#
# Environment (defaults in brackets):
#   MODEL_DIR   checkpoints to evaluate [ckpt/imagenet]
#   MODEL       architecture, used if MODEL_DIR has no model_params.txt
#               [efficientnet-b0]
#   DATA_DIR    labeled records with validation-* files [data/imagenet/proc]
#   BATCH_SIZE  images per eval batch [64]
#   PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended to the Python call.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/common.sh

MODEL_DIR="${MODEL_DIR:-ckpt/imagenet}"
MODEL="${MODEL:-efficientnet-b0}"
DATA_DIR="${DATA_DIR:-data/imagenet/proc}"
BATCH_SIZE="${BATCH_SIZE:-64}"
collect_extra_flags "$@"
require_dir "${DATA_DIR}" DATA_DIR "See docs/imagenet.md for the expected layout."
require_checkpoint "${MODEL_DIR}" MODEL_DIR "Train with train.sh or run_offline.sh first."

"${PYTHON}" main.py \
  --use_tpu=False \
  --use_bfloat16=False \
  --task_name=imagenet \
  --mode=eval \
  --model_name="${MODEL}" \
  --eval_batch_size="${BATCH_SIZE}" \
  --label_data_dir="${DATA_DIR}" \
  --model_dir="${MODEL_DIR}" \
  "${EXTRA[@]}"
