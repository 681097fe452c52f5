#!/bin/bash
# Step 4 of the offline pipeline: trains the noisy student from the stored,
# filtered and balanced predictions of filter_unlabel.sh (no teacher runs
# during training), then evaluates it on dev and test. Same published
# settings as run.sh; the pseudo labels are the stored probabilities at
# temperature 1.
#
# Environment (defaults in brackets):
#   DATA_DIR      labeled data from prepro.sh [data/svhn/proc]
#   UNLABEL_DIR   filtered records of filter_unlabel.sh 0, or the output of
#                 reassign.sh [data/svhn/predict/filter_data/data]
#   MODEL_DIR     student checkpoints [ckpt/exp_1_offline] (not run.sh's
#                 ckpt/exp_1: a finished online run there would be resumed
#                 and nothing trained); delete it to start over
#   TASK_NAME     svhn, or mnist for the MNIST task in the same layout [svhn]
#   PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended to both Python calls, e.g. --train_steps=20000.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/common.sh

DATA_DIR="${DATA_DIR:-data/svhn/proc}"
UNLABEL_DIR="${UNLABEL_DIR:-data/svhn/predict/filter_data/data}"
MODEL_DIR="${MODEL_DIR:-ckpt/exp_1_offline}"
TASK_NAME="${TASK_NAME:-svhn}"
collect_extra_flags "$@"
require_dir "${DATA_DIR}" DATA_DIR "Write the data with local_scripts/svhn/prepro.sh."
require_dir "${UNLABEL_DIR}" UNLABEL_DIR \
  "Run predict.sh, filter_unlabel.sh 1 and filter_unlabel.sh 0 first."
_is_remote "${UNLABEL_DIR}" || compgen -G "${UNLABEL_DIR}/train-*" >/dev/null ||
  die "UNLABEL_DIR=${UNLABEL_DIR} holds no train-* records; run filter_unlabel.sh 0 first."

"${PYTHON}" main.py \
  --model_name=efficientnet-b0 \
  --use_tpu=False \
  --use_bfloat16=False \
  --task_name="${TASK_NAME}" \
  --mode=train \
  --train_batch_size=128 \
  --iterations_per_loop=1000 \
  --save_checkpoints_steps=1000 \
  --unlabel_ratio=5 \
  --teacher_softmax_temp=1 \
  --augment_name=v1 \
  --randaug_mag=5 \
  --final_base_lr=0.0002 \
  --weight_decay=1e-4 \
  --label_data_dir="${DATA_DIR}" \
  --unlabel_data_dir="${UNLABEL_DIR}" \
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
