#!/bin/bash
# Step 1 on MNIST: trains the supervised teacher on the labeled digits, then
# evaluates it on train, dev and test. This is local_scripts/svhn/
# train_teacher.sh with TASK_NAME=mnist and the CPU settings of defaults.sh
# (MODEL_FLAGS, TEACHER_FLAGS, RUN_FLAGS).
#
# Environment (defaults in brackets; see also defaults.sh):
#   DATA_DIR     labeled data from prepro.sh [data/mnist/proc]
#   MODEL_DIR    teacher checkpoints [ckpt/mnist/teacher]; an existing run
#                there is resumed, delete the directory to start over
#   PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended to both Python calls, e.g. --train_steps=500.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/common.sh

MODEL_DIR="${MODEL_DIR:-ckpt/mnist/teacher}"
require_dir "${DATA_DIR}" DATA_DIR "Write the data with local_scripts/mnist/prepro.sh."
export TASK_NAME DATA_DIR MODEL_DIR PYTHON
export EXTRA_FLAGS="${MODEL_FLAGS} ${RUN_FLAGS} ${TEACHER_FLAGS} ${EXTRA_FLAGS:-}"
exec bash local_scripts/svhn/train_teacher.sh "$@"
