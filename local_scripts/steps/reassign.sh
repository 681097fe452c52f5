# shellcheck shell=bash
# Relabels the filtered data with a (better) model, e.g. a student, keeping
# the images: each filtered record gets the new model's `probabilities`,
# `label` and `prob`. Sourced by local_scripts/<task>/reassign.sh after the
# task's defaults.sh:
#
#   source local_scripts/steps/reassign.sh [flags...]
#
# Reads   $INPUT_DIR/train-0-%05d-of-%05d   (filter_unlabel.sh 0's output)
# Writes  $OUTPUT_DIR/train-0-%05d-of-%05d
# Finished shards are skipped, so re-running after a failure redoes only the
# missing ones. Train on the result with UNLABEL_DIR=$OUTPUT_DIR run_offline.sh.
#
# Variables (the task's defaults.sh sets those shown without a default):
#   TASK_NAME             the task
#   REASSIGN_CKPT         model_dir or checkpoint prefix of the relabeling model
#   REASSIGN_MODEL        its architecture, used if it has no model_params.txt
#                         [efficientnet-b0]
#   DATA_ROOT             prediction root
#   INPUT_DIR             filtered records [$FILTERED_DIR = $DATA_ROOT/filter_data/data]
#   OUTPUT_DIR            relabeled records [$DATA_ROOT/reassign]
#   NUM_SHARDS            number of filtered files
#   LOG_DIR               worker logs [$DATA_ROOT/logs]
#   BATCH_SIZE            images per prediction batch
#   PREDICT_FLAGS, EXTRA_FLAGS   flags (word-split), as in steps/predict.sh;
#                         the step's arguments come last
#   GPUS, NUM_WORKERS, PYTHON, DRY_RUN   see local_scripts/common.sh
source local_scripts/steps/settings.sh

show_help_if_asked "$@"
INPUT_DIR="${INPUT_DIR:-${FILTERED_DIR}}"
OUTPUT_DIR="${OUTPUT_DIR:-${DATA_ROOT}/reassign}"
require_checkpoint "${REASSIGN_CKPT}" REASSIGN_CKPT
# filter_unlabel.sh runs one filter task per shard, task 0: files train-0-*.
require_shards "${INPUT_DIR}" train-0 "${NUM_SHARDS}" INPUT_DIR
setup_workers any

shard_done() {
  [[ -f "$(printf '%s/train-0-%05d-of-%05d' "${OUTPUT_DIR}" "$1" "${NUM_SHARDS}")" ]]
}

model_flags=()
if [[ -n "${REASSIGN_MODEL}" ]]; then model_flags=(--model_name="${REASSIGN_MODEL}"); fi
words_of PREDICT_FLAGS EXTRA_FLAGS
# --worker_id=0 selects the filter task's files train-0-*.
prediction_command --reassign_label=True "${model_flags[@]}" \
  --predict_ckpt_path="${REASSIGN_CKPT}" --label_data_dir="${INPUT_DIR}" --file_prefix=train \
  --output_dir="${OUTPUT_DIR}" "${FLAG_WORDS[@]}" "$@"
run_sharded reassign list "${NUM_SHARDS}" "${PY_COMMAND[@]}"
