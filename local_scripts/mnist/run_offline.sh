#!/bin/bash
# Step 4 on MNIST: trains the noisy student on the labeled digits plus the
# filtered, balanced pseudo-labeled ones (hard pseudo labels: the stored
# teacher probabilities' class), from scratch, with RandAugment, dropout and
# stochastic depth, and evaluates it on train, dev and test in the same
# process (EVAL_AFTER_TRAINING=in_process), with the CPU settings of
# defaults.sh (MODEL_FLAGS, RUN_FLAGS, STUDENT_FLAGS; local_scripts/steps/
# train.sh).
#
#   bash local_scripts/mnist/run_offline.sh [flags...]
#   DRY_RUN=1 bash local_scripts/mnist/run_offline.sh   # print the commands
#
# Environment (defaults in brackets; settings in defaults.sh):
#   DATA_DIR       labeled data from prepro.sh [data/mnist/proc]
#   DATA_ROOT      prediction root of predict.sh [data/mnist/predict]
#   UNLABEL_DIR    filtered records of filter_unlabel.sh 0, or the output of
#                  reassign.sh [$DATA_ROOT/filter_data/data]
#   MODEL_DIR      student checkpoints [ckpt/mnist/student]; an existing run
#                  there is resumed, delete the directory to start over
#   MODEL_FLAGS    architecture [defaults.sh]
#   RUN_FLAGS      loops, checkpoints, logging, evaluation [defaults.sh]
#   STUDENT_STEPS  training steps [local_scripts/steps/cpu_recipe.sh]
#   STUDENT_FLAGS  training flags, with STUDENT_STEPS [local_scripts/steps/
#                  cpu_recipe.sh]; setting it replaces them all, STUDENT_STEPS
#                  included
#   EXTRA_FLAGS, EXTRA_TRAIN_FLAGS, EXTRA_STUDENT_FLAGS
#                  your flags, in this order after the settings above
#                  (docs/scripts.md)
#   PYTHON         interpreter [.venv/bin/python if present, else python]
#   DRY_RUN        see local_scripts/common.sh
# Arguments are appended to the Python call, e.g.
# --init_model_path=ckpt/mnist/teacher to start from the teacher's weights.
# A flag given twice keeps its last value.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/steps/train.sh offline "$@"
