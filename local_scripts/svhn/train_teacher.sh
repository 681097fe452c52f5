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
#   TRAIN_FLAGS    your flags for both Python calls (training, evaluation)
#   EXTRA_FLAGS    your flags for every main.py call, before TRAIN_FLAGS
#   PYTHON, DRY_RUN   see local_scripts/common.sh
# Arguments are appended to both Python calls, e.g. --train_steps=20000.
# Each flag reaches main.py once, with the last value given.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/svhn/defaults.sh
source local_scripts/steps/train.sh teacher "$@"
