#!/bin/bash
# ImageNet noisy student with the teacher predicting on the fly (soft pseudo
# labels at temperature 1). MODEL picks the published flags of that student
# (defaults.sh); the rest is the published base command (batch 4096, 109,474
# steps times train_ratio). Evaluate with eval.sh.
#
#   MODEL=efficientnet-b0 TEACHER_CKPT=... bash local_scripts/imagenet/train.sh [flags...]
#   DRY_RUN=1 MODEL=efficientnet-b7 bash local_scripts/imagenet/train.sh   # print the command
#
# Environment (defaults in brackets; settings in defaults.sh):
#   MODEL          student: efficientnet-b0 ... efficientnet-b7 [efficientnet-b0]
#   TEACHER_MODEL  teacher architecture, checked against the checkpoint's
#                  model_params.txt [$MODEL]
#   TEACHER_CKPT   teacher model_dir or checkpoint prefix [ckpt/imagenet_teacher]
#   DATA_DIR       labeled train-*/validation-* records (docs/imagenet.md)
#                  [data/imagenet/proc]
#   UNLABEL_DIR    unlabeled records [$DATA_DIR/unlabeled]
#   MODEL_DIR      student checkpoints [ckpt/imagenet]; an existing run there
#                  is resumed, delete the directory to start over
#   MODEL_FLAGS    architecture [--model_name=$MODEL]
#   STUDENT_FLAGS  training flags [the published ones of MODEL]
#   RUN_FLAGS      loop and checkpoint flags [main.py's defaults]
#   EXTRA_FLAGS, EXTRA_TRAIN_FLAGS, EXTRA_STUDENT_FLAGS
#                  your flags, in this order after the settings above
#                  (docs/scripts.md)
#   PYTHON, DRY_RUN   see local_scripts/common.sh
# Arguments are appended, e.g. --use_tpu=True --tpu=NAME --use_bfloat16=True;
# a flag given twice keeps its last value.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/imagenet/defaults.sh
# The on-the-fly teacher is checked against the student's architecture, as published.
TEACHER_MODEL="${TEACHER_MODEL:-${MODEL}}"
source local_scripts/steps/train.sh student "$@"
