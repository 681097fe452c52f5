#!/bin/bash
# Step 3 of the offline pipeline: filters the teacher's predictions by
# confidence and balances the classes, in two passes over all shards.
#
#   bash local_scripts/svhn/filter_unlabel.sh 1   # pass 1: per-shard statistics
#   bash local_scripts/svhn/filter_unlabel.sh 0   # pass 2: filtered, balanced data
#
# Pass 2 needs the statistics of every shard; if some are missing it stops
# at once and lists them (nothing waits or polls). Both passes run shards in
# parallel on CPU workers, each worker handling all its shards in one call
# (--shard_id=w,w+n,...: TensorFlow starts once per worker, not per shard); a
# failed shard does not stop the worker's other shards, and the failed ones
# are listed at the end. A re-run redoes the pass and gives identical files.
#
# Reads   $UNLABEL_DIR/$FILE_PREFIX-*, $DATA_ROOT/predict_label, $DATA_ROOT/info
# Writes  pass 1: $DATA_ROOT/prelim_stats/prelim_stats_%05d_0.json
#         pass 2: $DATA_ROOT/filter_data/data/train-0-%05d-of-%05d (+ stats/,
#                 threshold.json, samples/); then run_offline.sh.
#
# Environment (defaults in brackets):
#   UNLABEL_DIR    unlabeled records [data/svhn/proc/unlabeled]
#   FILE_PREFIX    name prefix of the unlabeled files [extra]
#   NUM_SHARDS     number of unlabeled files [128]
#   DATA_ROOT      prediction root of predict.sh [data/svhn/predict]
#   LOG_DIR        worker logs [$DATA_ROOT/logs]
#   NUM_IMAGE      target images per class [53113, as published]
#   MIN_THRESHOLD  lowest confidence kept [0.3, as published]
#   NUM_WORKERS or GPUS   number of parallel CPU workers (with GPUS, one per
#                  listed id; filtering never uses a GPU) [1]
#   PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments after the pass number are appended to every Python call.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/common.sh

ONLY_GET_STATS="${1:-}"
[[ "${ONLY_GET_STATS}" == 0 || "${ONLY_GET_STATS}" == 1 ]] ||
  die "usage: $0 1|0 [flags...]  (1: pass 1, statistics; 0: pass 2, filtered data)"
shift
UNLABEL_DIR="${UNLABEL_DIR:-data/svhn/proc/unlabeled}"
FILE_PREFIX="${FILE_PREFIX:-extra}"
NUM_SHARDS="${NUM_SHARDS:-128}"
DATA_ROOT="${DATA_ROOT:-data/svhn/predict}"
LOG_DIR="${LOG_DIR:-${DATA_ROOT}/logs}"
NUM_IMAGE="${NUM_IMAGE:-53113}"
MIN_THRESHOLD="${MIN_THRESHOLD:-0.3}"
collect_extra_flags "$@"
require_dir "${DATA_ROOT}/predict_label" DATA_ROOT "Run local_scripts/svhn/predict.sh first."
require_dir "${DATA_ROOT}/info" DATA_ROOT "Run local_scripts/svhn/predict.sh first."
if ((ONLY_GET_STATS == 0)); then
  require_shards "${UNLABEL_DIR}" "${FILE_PREFIX}" "${NUM_SHARDS}" UNLABEL_DIR
  require_stats "${DATA_ROOT}/prelim_stats" "${NUM_SHARDS}" \
    "Run pass 1 first: bash local_scripts/svhn/filter_unlabel.sh 1"
fi
setup_workers cpu

# A shard is done when its output exists (used to name the failed shards).
shard_done() {
  if ((ONLY_GET_STATS)); then
    [[ -f "$(printf '%s/prelim_stats/prelim_stats_%05d_0.json' "${DATA_ROOT}" "$1")" ]]
  else
    [[ -f "$(printf '%s/filter_data/stats/stats_%05d_0.json' "${DATA_ROOT}" "$1")" ]]
  fi
}

run_sharded "filter-pass$((2 - ONLY_GET_STATS))" list "${NUM_SHARDS}" \
  "${PYTHON}" filter_unlabel_data.py \
  --input_dir="${UNLABEL_DIR}" \
  --file_prefix="${FILE_PREFIX}" \
  --data_type=tfrecord \
  --info_dir="${DATA_ROOT}/info" \
  --prediction_dir="${DATA_ROOT}/predict_label" \
  --prelim_stats_dir="${DATA_ROOT}/prelim_stats" \
  --output_dir="${DATA_ROOT}/filter_data" \
  --num_shards="${NUM_SHARDS}" \
  --task=0 \
  --num_label_classes=10 \
  --min_threshold="${MIN_THRESHOLD}" \
  --num_image="${NUM_IMAGE}" \
  --only_get_stats="${ONLY_GET_STATS}" \
  "${EXTRA[@]}"
if ((ONLY_GET_STATS == 0)); then
  echo "Filtered data: ${DATA_ROOT}/filter_data/data; counts: ${DATA_ROOT}/filter_data/stats/final_stats.json"
fi
