# MNIST settings shared by the scripts of this folder. Sourced, never run.
#
# The MNIST scripts are the SVHN ones (local_scripts/svhn/*.sh) with
# TASK_NAME=mnist and the CPU-sized settings below; every variable can be
# overridden from the environment. Training flags are put in front of
# EXTRA_FLAGS and the scripts' arguments, so both still override them (the
# last value of a repeated flag wins).

TASK_NAME=mnist
DATA_DIR="${DATA_DIR:-data/mnist/proc}"
# Unlabeled images, written by prepro.sh: $DATA_DIR/unlabeled/extra-*.
RAW_UNLABEL_DIR="${RAW_UNLABEL_DIR:-${DATA_DIR}/unlabeled}"
FILE_PREFIX="${FILE_PREFIX:-extra}"
NUM_SHARDS="${NUM_SHARDS:-4}"
# Predictions, statistics and filtered data of predict.sh / filter_unlabel.sh.
DATA_ROOT="${DATA_ROOT:-data/mnist/predict}"
BATCH_SIZE="${BATCH_SIZE:-500}"

# The network: EfficientNet-B0 with width and depth scaled by 0.25 (131k
# parameters, 32x32 small-image variant as for SVHN). Dropout 0.2 before the
# classifier and stochastic depth 0.2 are the B0 defaults.
MODEL_FLAGS="${MODEL_FLAGS:---model_name=efficientnet-b0 --width_coefficient=0.25 --depth_coefficient=0.25}"
# Logging, checkpoints and evaluation (the training accuracy is evaluated too).
RUN_FLAGS="${RUN_FLAGS:---iterations_per_loop=250 --save_checkpoints_steps=500 --log_step_count_steps=250 --eval_batch_size=500 --eval_subsets=train,dev,test}"
# Teacher: supervised on the labeled images only, with RandAugment.
TEACHER_FLAGS="${TEACHER_FLAGS:---train_batch_size=64 --train_steps=3000 --base_learning_rate=0.048 --final_base_lr=0.0002 --weight_decay=1e-4 --augment_name=v1 --randaug_mag=10}"
# Noisy student: labeled + filtered pseudo-labeled images, soft labels at
# temperature 1, RandAugment on the student's inputs.
STUDENT_FLAGS="${STUDENT_FLAGS:---train_batch_size=32 --unlabel_ratio=3 --teacher_softmax_temp=1 --train_steps=1500 --base_learning_rate=0.048 --final_base_lr=0.0002 --weight_decay=1e-4 --augment_name=v1 --randaug_mag=10}"

# 1: loop.sh starts each student from its teacher's weights (--init_model_path).
INIT_STUDENT="${INIT_STUDENT:-1}"

# Filtering and balancing: images per class after balancing and the lowest
# confidence kept (the published SVHN threshold).
NUM_IMAGE="${NUM_IMAGE:-5000}"
MIN_THRESHOLD="${MIN_THRESHOLD:-0.3}"

# Python of the project's virtualenv when there is one.
if [[ -z "${PYTHON:-}" && -x .venv/bin/python ]]; then
  PYTHON=.venv/bin/python
fi
