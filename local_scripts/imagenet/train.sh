#!/bin/bash
# ImageNet noisy student with the teacher predicting on the fly (soft pseudo
# labels at temperature 1). MODEL picks the published flags of that student
# from student_flags.sh; the rest is the published base command (batch
# 4096, 109,474 steps times train_ratio). Evaluate with eval.sh.
#
# Environment (defaults in brackets):
#   MODEL          student: efficientnet-b0 ... efficientnet-b7 [efficientnet-b0]
#   TEACHER_MODEL  teacher architecture, checked against the checkpoint's
#                  model_params.txt [$MODEL]
#   TEACHER_CKPT   teacher model_dir or checkpoint prefix [ckpt/imagenet_teacher]
#   DATA_DIR       labeled train-*/validation-* records (docs/imagenet.md)
#                  [data/imagenet/proc]
#   UNLABEL_DIR    unlabeled records [data/imagenet/proc/unlabeled]
#   MODEL_DIR      student checkpoints [ckpt/imagenet]; an existing run there
#                  is resumed, delete the directory to start over
#   PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended, e.g. --use_tpu=True --tpu=NAME --use_bfloat16=True.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/common.sh
source local_scripts/imagenet/student_flags.sh

MODEL="${MODEL:-efficientnet-b0}"
TEACHER_MODEL="${TEACHER_MODEL:-${MODEL}}"
TEACHER_CKPT="${TEACHER_CKPT:-ckpt/imagenet_teacher}"
DATA_DIR="${DATA_DIR:-data/imagenet/proc}"
UNLABEL_DIR="${UNLABEL_DIR:-data/imagenet/proc/unlabeled}"
MODEL_DIR="${MODEL_DIR:-ckpt/imagenet}"
set_student_flags "${MODEL}"
collect_extra_flags "$@"
require_dir "${DATA_DIR}" DATA_DIR "See docs/imagenet.md for the expected layout."
require_dir "${UNLABEL_DIR}" UNLABEL_DIR
require_checkpoint "${TEACHER_CKPT}" TEACHER_CKPT "Point TEACHER_CKPT at the teacher's checkpoint."

"${PYTHON}" main.py \
  --use_tpu=False \
  --use_bfloat16=False \
  --task_name=imagenet \
  --mode=train \
  --model_name="${MODEL}" \
  --label_data_dir="${DATA_DIR}" \
  --unlabel_data_dir="${UNLABEL_DIR}" \
  --model_dir="${MODEL_DIR}" \
  --teacher_model_name="${TEACHER_MODEL}" \
  --teacher_model_path="${TEACHER_CKPT}" \
  --teacher_softmax_temp=1 \
  "${MODEL_FLAGS[@]}" \
  "${EXTRA[@]}"
