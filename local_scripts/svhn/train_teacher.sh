#!/bin/bash
# Step 1: trains the supervised EfficientNet-B0 teacher on labeled SVHN, then
# evaluates it on dev and test (published teacher: 97.9% test top-1).
#
# The published code shipped this teacher only as a checkpoint (its download
# link is dead). The settings below are those of the published student
# (local_scripts/svhn/run.sh) without the unlabeled data: B0, batch 128,
# RandAugment v1 magnitude 5, weight decay 1e-4, learning rate decayed to
# final_base_lr 0.0002 over the default 109,474 steps (about 200 epochs).
#
# Environment (defaults in brackets):
#   DATA_DIR     labeled data from prepro.sh [data/svhn/proc]
#   MODEL_DIR    teacher checkpoints [ckpt/teacher_ckpt]; an existing run
#                there is resumed, delete the directory to start over
#   TASK_NAME    svhn, or mnist for the MNIST task in the same layout [svhn]
#   PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended to both Python calls, e.g. --train_steps=20000.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/common.sh

DATA_DIR="${DATA_DIR:-data/svhn/proc}"
MODEL_DIR="${MODEL_DIR:-ckpt/teacher_ckpt}"
TASK_NAME="${TASK_NAME:-svhn}"
collect_extra_flags "$@"
require_dir "${DATA_DIR}" DATA_DIR "Write the data with local_scripts/svhn/prepro.sh."

"${PYTHON}" main.py \
  --model_name=efficientnet-b0 \
  --use_tpu=False \
  --use_bfloat16=False \
  --task_name="${TASK_NAME}" \
  --mode=train \
  --train_batch_size=128 \
  --iterations_per_loop=1000 \
  --save_checkpoints_steps=1000 \
  --augment_name=v1 \
  --randaug_mag=5 \
  --final_base_lr=0.0002 \
  --weight_decay=1e-4 \
  --label_data_dir="${DATA_DIR}" \
  --model_dir="${MODEL_DIR}" \
  "${EXTRA[@]}"

"${PYTHON}" main.py \
  --model_name=efficientnet-b0 \
  --use_tpu=False \
  --use_bfloat16=False \
  --task_name="${TASK_NAME}" \
  --mode=eval \
  --label_data_dir="${DATA_DIR}" \
  --model_dir="${MODEL_DIR}" \
  "${EXTRA[@]}"
