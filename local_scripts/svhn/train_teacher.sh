#!/bin/bash
# Step 1: trains the supervised EfficientNet-B0 teacher on labeled SVHN, then
# evaluates it on dev and test (published teacher: 97.9% test top-1). The
# published code shipped this teacher only as a checkpoint; it trains with
# the published student's settings without the unlabeled data (defaults.sh).
#
#   bash local_scripts/svhn/train_teacher.sh [flags...]
#   DRY_RUN=1 bash local_scripts/svhn/train_teacher.sh   # print the commands
#
# Environment (defaults in brackets; settings in defaults.sh):
#   DATA_DIR       labeled data from prepro.sh [data/svhn/proc]
#   MODEL_DIR      teacher checkpoints [ckpt/teacher_ckpt]; an existing run
#                  there is resumed, delete the directory to start over
#   TASK_NAME      svhn, or mnist for the MNIST task in the same layout [svhn]
#   MODEL_FLAGS    architecture [--model_name=efficientnet-b0]
#   RUN_FLAGS      loops and checkpoints [every 1000 steps]
#   TEACHER_FLAGS  training flags [published: batch 128, RandAugment v1
#                  magnitude 5, weight decay 1e-4, final_base_lr 0.0002]
#   EXTRA_FLAGS, EXTRA_TRAIN_FLAGS, EXTRA_TEACHER_FLAGS
#                  your flags, in this order after the settings above
#                  (docs/scripts.md)
#   PYTHON, DRY_RUN   see local_scripts/common.sh
# Arguments are appended to both Python calls, e.g. --train_steps=20000.
# A flag given twice keeps its last value.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/svhn/defaults.sh
source local_scripts/steps/train.sh teacher "$@"
