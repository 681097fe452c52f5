#!/bin/bash
# Step 4 on MNIST: trains the noisy student on the labeled digits plus the
# filtered, balanced pseudo-labeled ones (stored teacher probabilities, soft
# labels at temperature 1), with RandAugment, dropout and stochastic depth,
# then evaluates it on train, dev and test. This is local_scripts/svhn/
# run_offline.sh with TASK_NAME=mnist and the CPU settings of defaults.sh
# (MODEL_FLAGS, STUDENT_FLAGS, RUN_FLAGS).
#
# Environment (defaults in brackets; see also defaults.sh):
#   DATA_DIR      labeled data from prepro.sh [data/mnist/proc]
#   UNLABEL_DIR   filtered records of filter_unlabel.sh 0, or the output of
#                 reassign.sh [$DATA_ROOT/filter_data/data = data/mnist/predict/filter_data/data]
#   MODEL_DIR     student checkpoints [ckpt/mnist/student]; an existing run
#                 there is resumed, delete the directory to start over
#   PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended to both Python calls, e.g.
# --init_model_path=ckpt/mnist/teacher to start from the teacher's weights.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/common.sh

UNLABEL_DIR="${UNLABEL_DIR:-${DATA_ROOT}/filter_data/data}"
MODEL_DIR="${MODEL_DIR:-ckpt/mnist/student}"
require_dir "${DATA_DIR}" DATA_DIR "Write the data with local_scripts/mnist/prepro.sh."
require_dir "${UNLABEL_DIR}" UNLABEL_DIR \
  "Run local_scripts/mnist/predict.sh, then filter_unlabel.sh 1 and filter_unlabel.sh 0."
export TASK_NAME DATA_DIR UNLABEL_DIR MODEL_DIR PYTHON
export EXTRA_FLAGS="${MODEL_FLAGS} ${RUN_FLAGS} ${STUDENT_FLAGS} ${EXTRA_FLAGS:-}"
exec bash local_scripts/svhn/run_offline.sh "$@"
