#!/bin/bash
# Noisy student on SVHN with the teacher predicting on the fly (no stored
# predictions), then evaluation on dev and test. Published result: 98.6% test
# top-1 (± 0.1) from a 97.9% B0 teacher.
#
# Settings are the published ones (defaults.sh): B0 student and teacher,
# batch 128 labeled + 640 unlabeled images (unlabel_ratio 5), soft pseudo
# labels at temperature 1, RandAugment v1 magnitude 5 on the student's
# inputs, weight decay 1e-4, learning rate decayed to final_base_lr 0.0002.
#
#   bash local_scripts/svhn/run.sh [flags...]
#   DRY_RUN=1 bash local_scripts/svhn/run.sh   # print the commands
#
# Environment (defaults in brackets; settings in defaults.sh):
#   DATA_DIR       labeled data from prepro.sh [data/svhn/proc]
#   UNLABEL_DIR    unlabeled records [$DATA_DIR/unlabeled]
#   TEACHER_CKPT   teacher model_dir or checkpoint prefix, e.g. from
#                  train_teacher.sh [ckpt/teacher_ckpt]
#   TEACHER_MODEL  teacher architecture, checked against the checkpoint's
#                  model_params.txt [efficientnet-b0]
#   MODEL_DIR      student checkpoints [ckpt/exp_1]; an existing run there is
#                  resumed, delete the directory to start over
#   TASK_NAME      svhn, or mnist for the MNIST task in the same layout [svhn]
#   MODEL_FLAGS    architecture [--model_name=efficientnet-b0]
#   RUN_FLAGS      loops and checkpoints [every 1000 steps]
#   STUDENT_FLAGS  training flags [published, see above]
#   EXTRA_FLAGS, EXTRA_TRAIN_FLAGS, EXTRA_STUDENT_FLAGS
#                  your flags, in this order after the settings above
#                  (docs/scripts.md)
#   PYTHON, DRY_RUN   see local_scripts/common.sh
# Arguments are appended to both Python calls, e.g. --train_steps=20000.
# A flag given twice keeps its last value.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/svhn/defaults.sh
source local_scripts/steps/train.sh student "$@"
