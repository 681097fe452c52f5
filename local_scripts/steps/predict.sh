# shellcheck shell=bash
# Step 2 of the offline pipeline: the teacher predicts class probabilities for
# every unlabeled image, one worker per GPU (or CPU worker), each taking every
# n-th shard. Sourced by local_scripts/<task>/predict.sh after the task's
# defaults.sh:
#
#   source local_scripts/steps/predict.sh [flags...]
#
# Reads   $UNLABEL_DIR/$FILE_PREFIX-%05d-of-%05d
# Writes  $DATA_ROOT/predict_label/train-info-%05d-of-%05d-00000  probabilities
#         $DATA_ROOT/info/info-%05d-of-%05d-00000.txt              image counts
# Finished shards are skipped, so re-running after a failure redoes only the
# missing ones. Next: filter_unlabel.sh 1, then filter_unlabel.sh 0.
#
# Variables (the task's defaults.sh sets those shown without a default):
#   TASK_NAME             the task
#   TEACHER_CKPT          teacher model_dir or checkpoint prefix [$TEACHER_DIR]
#   TEACHER_MODEL         architecture, used if TEACHER_CKPT has no
#                         model_params.txt [efficientnet-b0]
#   UNLABEL_DIR           unlabeled records [$RAW_UNLABEL_DIR = $DATA_DIR/unlabeled]
#   FILE_PREFIX           name prefix of the unlabeled files [extra]
#   NUM_SHARDS            number of unlabeled files
#   DATA_ROOT             output root
#   LOG_DIR               worker logs [$DATA_ROOT/logs]
#   BATCH_SIZE            images per prediction batch
#   PREDICT_FLAGS         flags of the prediction calls (word-split) [empty]
#   EXTRA_FLAGS           the user's flags of every main.py call (word-split),
#                         after PREDICT_FLAGS; the step's arguments come last.
#                         A flag given twice keeps its last value.
#   TEACHER_HINT          for the message on a missing teacher
#   GPUS, NUM_WORKERS, PYTHON, DRY_RUN   see local_scripts/common.sh
source local_scripts/steps/settings.sh

show_help_if_asked "$@"
UNLABEL_DIR="${UNLABEL_DIR:-${RAW_UNLABEL_DIR}}"
require_checkpoint "${TEACHER_CKPT}" TEACHER_CKPT "${TEACHER_HINT}"
require_shards "${UNLABEL_DIR}" "${FILE_PREFIX}" "${NUM_SHARDS}" UNLABEL_DIR
setup_workers any

shard_done() {
  [[ -f "$(printf '%s/predict_label/train-info-%05d-of-%05d-00000' "${DATA_ROOT}" "$1" "${NUM_SHARDS}")" &&
    -f "$(printf '%s/info/info-%05d-of-%05d-00000.txt' "${DATA_ROOT}" "$1" "${NUM_SHARDS}")" ]]
}

model_flags=()
if [[ -n "${TEACHER_MODEL}" ]]; then model_flags=(--model_name="${TEACHER_MODEL}"); fi
words_of PREDICT_FLAGS EXTRA_FLAGS
# --label_data_dir is the folder of the images to predict (the published
# script pointed it at the output root, where there are none).
prediction_command "${model_flags[@]}" --predict_ckpt_path="${TEACHER_CKPT}" \
  --label_data_dir="${UNLABEL_DIR}" --file_prefix="${FILE_PREFIX}" \
  --info_dir="${DATA_ROOT}/info" --output_dir="${DATA_ROOT}/predict_label" "${FLAG_WORDS[@]}" "$@"
run_sharded predict list "${NUM_SHARDS}" "${PY_COMMAND[@]}"
