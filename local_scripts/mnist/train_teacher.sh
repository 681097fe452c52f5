#!/bin/bash
# Step 1 on MNIST: trains the supervised teacher on the labeled digits and
# evaluates it on train, dev and test in the same process
# (EVAL_AFTER_TRAINING=in_process), with the CPU settings of defaults.sh
# (MODEL_FLAGS, RUN_FLAGS, TEACHER_FLAGS; local_scripts/steps/train.sh).
#
#   bash local_scripts/mnist/train_teacher.sh [flags...]
#   DRY_RUN=1 bash local_scripts/mnist/train_teacher.sh   # print the commands
#
# Environment (defaults in brackets; settings in defaults.sh):
#   DATA_DIR       labeled data from prepro.sh [data/mnist/proc]
#   MODEL_DIR      teacher checkpoints [ckpt/mnist/teacher]; an existing run
#                  there is resumed, delete the directory to start over
#   MODEL_FLAGS    architecture [defaults.sh]
#   RUN_FLAGS      loops, checkpoints, logging, evaluation [defaults.sh]
#   TEACHER_EPOCHS training length, in epochs of the labeled images
#                  [local_scripts/steps/cpu_recipe.sh]
#   TEACHER_FLAGS  training flags, with TEACHER_EPOCHS [local_scripts/steps/
#                  cpu_recipe.sh]; setting it replaces them all, TEACHER_EPOCHS
#                  included
#   EXTRA_FLAGS, EXTRA_TRAIN_FLAGS, EXTRA_TEACHER_FLAGS
#                  your flags, in this order after the settings above
#                  (docs/scripts.md)
#   PYTHON         interpreter [.venv/bin/python if present, else python]
#   DRY_RUN        see local_scripts/common.sh
# Arguments are appended to the Python call, e.g. --train_epochs=10.
# A flag given twice keeps its last value.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/steps/train.sh teacher "$@"
