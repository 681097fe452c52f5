#!/bin/bash
# ImageNet noisy student trained from stored pseudo labels: the filtered,
# balanced records of filter_unlabel.sh 0 (or of reassign.sh), with their
# probabilities at temperature 1; no teacher runs during training. Same
# per-model flags (student_flags.sh) and base command as train.sh.
# Evaluate with MODEL_DIR=ckpt/imagenet_offline bash local_scripts/imagenet/eval.sh
#
# Environment (defaults in brackets):
#   MODEL         student: efficientnet-b0 ... efficientnet-b7 [efficientnet-b0]
#   DATA_DIR      labeled records [data/imagenet/proc]
#   UNLABEL_DIR   filtered records [data/imagenet/predict/filter_data/data]
#   MODEL_DIR     student checkpoints [ckpt/imagenet_offline] (not train.sh's
#                 ckpt/imagenet, whose run would be resumed); delete it to
#                 start over
#   PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended, e.g. --use_tpu=True --tpu=NAME --use_bfloat16=True.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/common.sh
source local_scripts/imagenet/student_flags.sh

MODEL="${MODEL:-efficientnet-b0}"
DATA_DIR="${DATA_DIR:-data/imagenet/proc}"
UNLABEL_DIR="${UNLABEL_DIR:-data/imagenet/predict/filter_data/data}"
MODEL_DIR="${MODEL_DIR:-ckpt/imagenet_offline}"
set_student_flags "${MODEL}"
collect_extra_flags "$@"
require_dir "${DATA_DIR}" DATA_DIR "See docs/imagenet.md for the expected layout."
require_dir "${UNLABEL_DIR}" UNLABEL_DIR \
  "Run predict.sh, filter_unlabel.sh 1 and filter_unlabel.sh 0 first."
_is_remote "${UNLABEL_DIR}" || compgen -G "${UNLABEL_DIR}/train-*" >/dev/null ||
  die "UNLABEL_DIR=${UNLABEL_DIR} holds no train-* records; run filter_unlabel.sh 0 first."

"${PYTHON}" main.py \
  --use_tpu=False \
  --use_bfloat16=False \
  --task_name=imagenet \
  --mode=train \
  --model_name="${MODEL}" \
  --label_data_dir="${DATA_DIR}" \
  --unlabel_data_dir="${UNLABEL_DIR}" \
  --model_dir="${MODEL_DIR}" \
  --teacher_softmax_temp=1 \
  "${MODEL_FLAGS[@]}" \
  "${EXTRA[@]}"
echo "Evaluate with: MODEL_DIR=${MODEL_DIR} bash local_scripts/imagenet/eval.sh"
