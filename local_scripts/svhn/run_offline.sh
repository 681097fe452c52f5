#!/bin/bash
# Step 4 of the offline pipeline: trains the noisy student from the stored,
# filtered and balanced predictions of filter_unlabel.sh (no teacher runs
# during training), then evaluates it on dev and test. Same published
# settings as run.sh; the pseudo labels are the stored probabilities at
# temperature 1.
#
#   bash local_scripts/svhn/run_offline.sh [flags...]
#   DRY_RUN=1 bash local_scripts/svhn/run_offline.sh   # print the commands
#
# Environment (defaults in brackets; settings in defaults.sh):
#   DATA_DIR       labeled data from prepro.sh [data/svhn/proc]
#   DATA_ROOT      prediction root of predict.sh [data/svhn/predict]
#   UNLABEL_DIR    filtered records of filter_unlabel.sh 0, or the output of
#                  reassign.sh [$DATA_ROOT/filter_data/data]
#   MODEL_DIR      student checkpoints [ckpt/exp_1_offline] (not run.sh's
#                  ckpt/exp_1: a finished online run there would be resumed
#                  and nothing trained); delete it to start over
#   TASK_NAME      svhn, or mnist for the MNIST task in the same layout [svhn]
#   MODEL_FLAGS    architecture [--model_name=efficientnet-b0]
#   RUN_FLAGS      loops and checkpoints [every 1000 steps]
#   STUDENT_FLAGS  training flags [published, as run.sh]
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
source local_scripts/steps/train.sh offline "$@"
