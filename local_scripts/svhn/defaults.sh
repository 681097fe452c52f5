# shellcheck shell=bash disable=SC2034  # the sourcing scripts use these
# SVHN: every setting of the scripts of this folder, with the published values
# (docs/method.md, "Published settings"). Sourced by each of them before its
# step script (local_scripts/steps/); never run. Each X="${X:-...}" can be
# overridden from the environment; local_scripts/steps/settings.sh adds the
# settings every task derives the same way (file prefix, log folder, ...).

# TASK_NAME=mnist runs the MNIST task, written in the same layout, with these
# scripts (the tests do).
TASK_NAME="${TASK_NAME:-svhn}"
TASK_SCRIPTS=local_scripts/svhn
NUM_CLASSES=10

# prepro.sh: TFDS svhn_cropped (SOURCE=tfds) or the .mat files of
# RAW_DATA_DIR (SOURCE=mat), written to DATA_DIR.
SOURCE="${SOURCE:-tfds}"
RAW_DATA_DIR="${RAW_DATA_DIR:-data/svhn/raw}"
DATA_DIR="${DATA_DIR:-data/svhn/proc}"

# The MODEL_DIR of each training script. The later steps read them:
# TEACHER_CKPT is the teacher's, reassign.sh relabels with run.sh's student.
TEACHER_DIR=ckpt/teacher_ckpt
STUDENT_DIR=ckpt/exp_1
# Not run.sh's: a finished online run there would be resumed, nothing trained.
OFFLINE_STUDENT_DIR=ckpt/exp_1_offline
REASSIGN_CKPT="${REASSIGN_CKPT:-${STUDENT_DIR}}"

# Training, as published: EfficientNet-B0; batch 128 labeled images;
# RandAugment v1 magnitude 5; weight decay 1e-4; learning rate decayed to
# final_base_lr 0.0002 over the default 109,474 steps (about 200 epochs).
# The student adds 640 unlabeled images a batch (unlabel_ratio 5) with soft
# pseudo labels at temperature 1. The published code shipped the teacher only
# as a checkpoint (its download link is dead): it trains with the student's
# settings, without the unlabeled images.
MODEL_FLAGS="${MODEL_FLAGS:---model_name=efficientnet-b0}"
RUN_FLAGS="${RUN_FLAGS:---iterations_per_loop=1000 --save_checkpoints_steps=1000}"
published_flags="--train_batch_size=128 --augment_name=v1 --randaug_mag=5 --final_base_lr=0.0002 --weight_decay=1e-4"
TEACHER_FLAGS="${TEACHER_FLAGS:-${published_flags}}"
STUDENT_FLAGS="${STUDENT_FLAGS:-${published_flags} --unlabel_ratio=5 --teacher_softmax_temp=1}"
EVAL_AFTER_TRAINING=1
# local_scripts/loop.sh with TASK_NAME=svhn (svhn/loop.sh): rounds, and
# students from scratch (1: from their teacher's weights), as published.
ROUNDS="${ROUNDS:-2}"
INIT_STUDENT="${INIT_STUDENT:-0}"

# Pseudo labels: predict.sh, filter_unlabel.sh and reassign.sh write below
# DATA_ROOT; the filter keeps NUM_IMAGE images per class (as published),
# none below confidence MIN_THRESHOLD (as published).
DATA_ROOT="${DATA_ROOT:-data/svhn/predict}"
NUM_SHARDS="${NUM_SHARDS:-128}"
BATCH_SIZE="${BATCH_SIZE:-256}"
NUM_IMAGE="${NUM_IMAGE:-53113}"
MIN_THRESHOLD="${MIN_THRESHOLD:-0.3}"
FILTER_WORKERS=1
