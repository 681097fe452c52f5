# shellcheck shell=bash
# The settings that follow from a task's defaults.sh in the same way for every
# task, and the command lines the steps share: a step's command is written
# out in its step script and here (docs/scripts.md). Sourced by each step
# script of this folder, after the task's defaults.sh; every X="${X:-...}"
# below can be overridden from the environment.
#
# The file layout is the one of docs/method.md, "Record formats": prepro.sh
# writes $DATA_DIR/unlabeled/extra-*; predict.sh, filter_unlabel.sh and
# reassign.sh write below one prediction root, $DATA_ROOT.
source local_scripts/common.sh

# FILE_PREFIX names the unlabeled files; RAW_UNLABEL_DIR holds them (the
# default UNLABEL_DIR of predict.sh, the filter and an online student);
# FILTERED_DIR holds the filter's output (the default UNLABEL_DIR of
# run_offline.sh, INPUT_DIR of reassign.sh); TEACHER_CKPT is the model_dir
# of the task's teacher.
FILE_PREFIX="${FILE_PREFIX:-extra}"
RAW_UNLABEL_DIR="${RAW_UNLABEL_DIR:-${DATA_DIR}/unlabeled}"
# shellcheck disable=SC2034  # read by the step scripts
FILTERED_DIR="${DATA_ROOT}/filter_data/data"
LOG_DIR="${LOG_DIR:-${DATA_ROOT}/logs}"
TEACHER_CKPT="${TEACHER_CKPT:-${TEACHER_DIR}}"
: "${DATA_HINT:=Write the data with ${TASK_SCRIPTS}/prepro.sh.}"
: "${TEACHER_HINT:=Train the teacher first with ${TASK_SCRIPTS}/train_teacher.sh, or point TEACHER_CKPT at one.}"

# The architecture of a checkpoint without model_params.txt (a prediction
# model or on-the-fly teacher written by other code): the published scripts'
# EfficientNet-B0, whatever the task trains (a B0 teacher of a larger student).
TEACHER_MODEL="${TEACHER_MODEL:-efficientnet-b0}"
REASSIGN_MODEL="${REASSIGN_MODEL:-efficientnet-b0}"

# The user's flags of the prediction calls (predict.sh, reassign.sh) and of
# the filter (filter_unlabel_data.py): empty default sets, replaced by setting
# them; EXTRA_FLAGS, reaching every main.py call, comes after PREDICT_FLAGS.
PREDICT_FLAGS="${PREDICT_FLAGS:-}"
FILTER_FLAGS="${FILTER_FLAGS:-}"

# main_py_command FLAG...: PY_COMMAND is a main.py call of TASK_NAME, off TPU
# in float32, then FLAG...; later flags such as --use_tpu=True --tpu=NAME
# --use_bfloat16=True replace these (absl keeps a flag's last value).
main_py_command() {
  # shellcheck disable=SC2034  # read by the caller
  PY_COMMAND=("${PYTHON:-python}" main.py --use_tpu=False --use_bfloat16=False
    --task_name="${TASK_NAME}" "$@")
}

# eval_command FLAG...: PY_COMMAND is the evaluation of MODEL_DIR's latest
# checkpoint on DATA_DIR, with MODEL_FLAGS and RUN_FLAGS, then FLAG...
eval_command() {
  words_of MODEL_FLAGS RUN_FLAGS
  main_py_command --mode=eval "${FLAG_WORDS[@]}" --label_data_dir="${DATA_DIR}" \
    --model_dir="${MODEL_DIR}" "$@"
}

# prediction_command FLAG...: PY_COMMAND is main.py --mode=predict on whole
# files of NUM_SHARDS shards (each worker predicts whole shards, hence
# --worker_id=0 of --total_replicas=1), BATCH_SIZE images a batch, then FLAG...
prediction_command() {
  # shellcheck disable=SC2153  # NUM_SHARDS comes from the task's defaults.sh
  main_py_command --mode=predict --data_type=tfrecord --num_shards="${NUM_SHARDS}" \
    --worker_id=0 --total_replicas=1 --eval_batch_size="${BATCH_SIZE}" "$@"
}
