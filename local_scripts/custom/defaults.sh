# shellcheck shell=bash disable=SC2034  # the sourcing scripts use these
# Your own images (proc_folder.py's task 'custom'): every setting of the
# scripts of this folder. Sourced by each of them before its step script
# (local_scripts/steps/); never run. Each X="${X:-...}" can be overridden
# from the environment. What follows from the data (classes, small or large
# images, the unlabeled shard count, NUM_IMAGE) is read from
# $DATA_DIR/dataset_info.json by task_info.py (docs/own_data.md).

# main.py reads the task from $DATA_DIR/dataset_info.json for this name.
TASK_NAME=custom
TASK_SCRIPTS=local_scripts/custom

# prepro.sh (proc_folder.py): class folders or a TFDS dataset in, DATA_DIR out.
LABELED_DIR="${LABELED_DIR:-}"
DEV_DIR="${DEV_DIR:-}"
TEST_DIR="${TEST_DIR:-}"
DEV_FRACTION="${DEV_FRACTION:-0}"
UNLABELED_DIR="${UNLABELED_DIR:-}"
UNLABELED_GLOB="${UNLABELED_GLOB:-}"
UNLABELED_LIST="${UNLABELED_LIST:-}"
UNLABELED_CLASS_DIR="${UNLABELED_CLASS_DIR:-}"
TFDS_NAME="${TFDS_NAME:-}"
TFDS_LABELED_SPLIT="${TFDS_LABELED_SPLIT:-train}"
TFDS_TEST_SPLIT="${TFDS_TEST_SPLIT:-test}"
TFDS_UNLABELED_SPLIT="${TFDS_UNLABELED_SPLIT:-}"
RANDOM_FLIP="${RANDOM_FLIP:-True}"
PREPRO_WORKERS="${PREPRO_WORKERS:-$(nproc 2>/dev/null || echo 1)}"
DATA_DIR="${DATA_DIR:-data/custom/proc}"

TEACHER_DIR=ckpt/custom/teacher
OFFLINE_STUDENT_DIR=ckpt/custom/student
REASSIGN_CKPT="${REASSIGN_CKPT:-${OFFLINE_STUDENT_DIR}}"

source local_scripts/common.sh
use_venv_python

# The data's settings (task_info.shell_settings); before prepro.sh has run,
# placeholders that the steps' own checks (no data yet) report. They are read
# as data, never run: each line must be a known name and a value of its kind
# (task_info.py checks the file; this checks again what reaches the shell).
DATA_NUM_CLASSES=0 DATA_SMALL_IMAGE=1 DATA_NUM_UNLABELED=0 DATA_UNLABELED_SHARDS=1
DATA_NUM_IMAGE=1 DATA_EVAL_SUBSETS=train,dev,test
if [[ -f "${DATA_DIR}/dataset_info.json" ]]; then
  settings=$("${PYTHON:-python}" task_info.py "${DATA_DIR}") || die "cannot read ${DATA_DIR}/dataset_info.json"
  while IFS= read -r line; do
    name=${line%%=*} value=${line#*=}
    case "${name}" in
      DATA_NUM_CLASSES | DATA_SMALL_IMAGE | DATA_NUM_UNLABELED | DATA_UNLABELED_SHARDS | DATA_NUM_IMAGE)
        [[ "${value}" =~ ^[0-9]+$ ]] ;;
      DATA_EVAL_SUBSETS) [[ "${value}" =~ ^[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*$ ]] ;;
      *) false ;;
    esac || die "${DATA_DIR}/dataset_info.json: unexpected setting ${line@Q} from task_info.py."
    printf -v "${name}" '%s' "${value}"
  done <<<"${settings}"
fi
NUM_CLASSES="${NUM_CLASSES:-${DATA_NUM_CLASSES}}"

# The network and the training recipe. Small images (median side <= 64 px):
# the MNIST demo's CPU-sized network and recipe (TEACHER_EPOCHS, STUDENT_STEPS,
# TEACHER_FLAGS, STUDENT_FLAGS: local_scripts/steps/cpu_recipe.sh), a
# starting point for a CPU (its step counts are the demo's 15-minute budget;
# more steps give more accurate models). Larger ones: EfficientNet-B0 at its
# own resolution (224), the ImageNet path, with the same recipe.
source local_scripts/steps/cpu_recipe.sh
if [[ "${DATA_SMALL_IMAGE}" == 1 ]]; then
  MODEL_FLAGS="${MODEL_FLAGS:-${CPU_SMALL_IMAGE_MODEL_FLAGS}}"
else
  MODEL_FLAGS="${MODEL_FLAGS:---model_name=efficientnet-b0}"
fi
RUN_FLAGS="${RUN_FLAGS:---iterations_per_loop=250 --save_checkpoints_steps=500 --log_step_count_steps=250 --eval_batch_size=250 --eval_subsets=${DATA_EVAL_SUBSETS}}"
EVAL_AFTER_TRAINING=in_process

ROUNDS="${ROUNDS:-1}"
INIT_STUDENT="${INIT_STUDENT:-0}"

# Pseudo labels: as many images per class after balancing as the unlabeled
# set would give with balanced classes (DATA_NUM_IMAGE).
DATA_ROOT="${DATA_ROOT:-data/custom/predict}"
NUM_SHARDS="${NUM_SHARDS:-${DATA_UNLABELED_SHARDS}}"
BATCH_SIZE="${BATCH_SIZE:-250}"
NUM_IMAGE="${NUM_IMAGE:-${DATA_NUM_IMAGE}}"
MIN_THRESHOLD="${MIN_THRESHOLD:-0.3}"
FILTER_WORKERS=$(nproc 2>/dev/null || echo 1)
