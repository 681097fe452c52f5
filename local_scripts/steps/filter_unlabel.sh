# shellcheck shell=bash
# Step 3 of the offline pipeline: filters the teacher's predictions by
# confidence and balances the classes, in two passes over all shards.
# Sourced by local_scripts/<task>/filter_unlabel.sh after the task's
# defaults.sh:
#
#   source local_scripts/steps/filter_unlabel.sh 1 [flags...]   # pass 1: statistics
#   source local_scripts/steps/filter_unlabel.sh 0 [flags...]   # pass 2: filtered data
#
# Pass 2 needs the statistics of every shard; if some are missing it stops
# at once and lists them (nothing waits or polls). Both passes run shards in
# parallel on CPU workers, each worker handling all its shards in one call
# (--shard_id=w,w+n,...: TensorFlow starts once per worker, not per shard); a
# failed shard does not stop the worker's other shards, and the failed ones
# are listed at the end. A re-run redoes the pass and gives identical files.
# The filter and its outputs: docs/pseudo_labels.md.
#
# Reads   $UNLABEL_DIR/$FILE_PREFIX-*, $DATA_ROOT/predict_label, $DATA_ROOT/info
# Writes  pass 1: $DATA_ROOT/prelim_stats/prelim_stats_%05d_0.json
#         pass 2: $DATA_ROOT/filter_data/data/train-0-%05d-of-%05d (+ stats/,
#                 threshold.json, samples/)
#
# Variables (the task's defaults.sh sets those shown without a default):
#   UNLABEL_DIR           unlabeled records [$RAW_UNLABEL_DIR = $DATA_DIR/unlabeled]
#   FILE_PREFIX           name prefix of the unlabeled files [extra]
#   NUM_SHARDS            number of unlabeled files
#   NUM_CLASSES           number of classes
#   DATA_ROOT             prediction root of predict.sh
#   LOG_DIR               worker logs [$DATA_ROOT/logs]
#   NUM_IMAGE             target images per class
#   MIN_THRESHOLD         lowest confidence kept
#   FILTER_WORKERS        CPU workers when neither NUM_WORKERS nor GPUS is set
#   FILTER_FLAGS          flags of filter_unlabel_data.py (word-split)
#                         [empty]; the step's arguments come after them, and
#                         a flag given twice keeps its last value.
#                         EXTRA_FLAGS (main.py flags) does not reach the
#                         filter.
#   NUM_WORKERS or GPUS   number of parallel CPU workers (with GPUS, one per
#                         listed id; filtering never uses a GPU)
#   TASK_SCRIPTS          for the messages
#   PYTHON, DRY_RUN       see local_scripts/common.sh
source local_scripts/steps/settings.sh

show_help_if_asked "$@"
only_get_stats="${1:-}"
[[ "${only_get_stats}" == 0 || "${only_get_stats}" == 1 ]] ||
  die "usage: $0 1|0 [flags...]  (1: pass 1, statistics; 0: pass 2, filtered data)"
shift
UNLABEL_DIR="${UNLABEL_DIR:-${RAW_UNLABEL_DIR}}"
if [[ -n "${EXTRA_FLAGS:-}" ]]; then
  echo "$(basename "$0"): note: EXTRA_FLAGS holds main.py flags and is not passed to the" \
    "filter; put flags of filter_unlabel_data.py in FILTER_FLAGS." >&2
fi
require_dir "${DATA_ROOT}/predict_label" DATA_ROOT "Run ${TASK_SCRIPTS}/predict.sh first."
require_dir "${DATA_ROOT}/info" DATA_ROOT "Run ${TASK_SCRIPTS}/predict.sh first."
if ((only_get_stats == 0)); then
  require_shards "${UNLABEL_DIR}" "${FILE_PREFIX}" "${NUM_SHARDS}" UNLABEL_DIR
  require_stats "${DATA_ROOT}/prelim_stats" "${NUM_SHARDS}" \
    "Run pass 1 first: bash ${TASK_SCRIPTS}/filter_unlabel.sh 1"
fi
if [[ -z "${GPUS:-}" && -z "${NUM_WORKERS:-}" ]]; then
  NUM_WORKERS=${FILTER_WORKERS}
fi
setup_workers cpu

# A shard is done when its output exists (used to name the failed shards).
shard_done() {
  if ((only_get_stats)); then
    [[ -f "$(printf '%s/prelim_stats/prelim_stats_%05d_0.json' "${DATA_ROOT}" "$1")" ]]
  else
    [[ -f "$(printf '%s/filter_data/stats/stats_%05d_0.json' "${DATA_ROOT}" "$1")" ]]
  fi
}

words_of FILTER_FLAGS
filter_command=("${PYTHON:-python}" filter_unlabel_data.py --input_dir="${UNLABEL_DIR}"
  --file_prefix="${FILE_PREFIX}" --data_type=tfrecord --info_dir="${DATA_ROOT}/info"
  --prediction_dir="${DATA_ROOT}/predict_label" --prelim_stats_dir="${DATA_ROOT}/prelim_stats"
  --output_dir="${DATA_ROOT}/filter_data" --num_shards="${NUM_SHARDS}" --task=0
  --num_label_classes="${NUM_CLASSES}" --min_threshold="${MIN_THRESHOLD}" --num_image="${NUM_IMAGE}"
  --only_get_stats="${only_get_stats}" "${FLAG_WORDS[@]}" "$@")
run_sharded "filter-pass$((2 - only_get_stats))" list "${NUM_SHARDS}" "${filter_command[@]}"
if ((only_get_stats == 0)) && ! dry_run; then
  echo "Filtered data: ${DATA_ROOT}/filter_data/data; counts: ${DATA_ROOT}/filter_data/stats/final_stats.json"
fi
