#!/bin/bash
# Relabels the filtered data with a (better) model, e.g. the student of
# train.sh or run_offline.sh, keeping the images: each filtered record gets the
# new model's `probabilities`, `label` and `prob`. Train on the result with
#   UNLABEL_DIR=data/imagenet/predict/reassign bash local_scripts/imagenet/run_offline.sh
#
# Reads   $INPUT_DIR/train-0-%05d-of-%05d   (filter_unlabel.sh 0's output)
# Writes  $OUTPUT_DIR/train-0-%05d-of-%05d
# Finished shards are skipped, so re-running after a failure redoes only the
# missing ones.
#
# Environment (defaults in brackets):
#   REASSIGN_CKPT   model_dir or checkpoint prefix of the relabeling model
#                   [ckpt/imagenet]
#   REASSIGN_MODEL  its architecture, used if it has no model_params.txt
#                   [efficientnet-b0]
#   DATA_ROOT       prediction root [data/imagenet/predict]
#   INPUT_DIR       filtered records [$DATA_ROOT/filter_data/data]
#   OUTPUT_DIR      relabeled records [$DATA_ROOT/reassign]
#   NUM_SHARDS      number of filtered files [128]
#   LOG_DIR         worker logs [$DATA_ROOT/logs]
#   BATCH_SIZE      images per prediction batch [64]
#   GPUS, NUM_WORKERS, PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended to every Python call.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/common.sh

REASSIGN_CKPT="${REASSIGN_CKPT:-ckpt/imagenet}"
REASSIGN_MODEL="${REASSIGN_MODEL:-efficientnet-b0}"
DATA_ROOT="${DATA_ROOT:-data/imagenet/predict}"
INPUT_DIR="${INPUT_DIR:-${DATA_ROOT}/filter_data/data}"
OUTPUT_DIR="${OUTPUT_DIR:-${DATA_ROOT}/reassign}"
NUM_SHARDS="${NUM_SHARDS:-128}"
LOG_DIR="${LOG_DIR:-${DATA_ROOT}/logs}"
BATCH_SIZE="${BATCH_SIZE:-64}"
collect_extra_flags "$@"
require_checkpoint "${REASSIGN_CKPT}" REASSIGN_CKPT
# filter_unlabel.sh runs one filter task per shard, task 0: files train-0-*.
require_shards "${INPUT_DIR}" train-0 "${NUM_SHARDS}" INPUT_DIR
setup_workers any

shard_done() {
  [[ -f "$(printf '%s/train-0-%05d-of-%05d' "${OUTPUT_DIR}" "$1" "${NUM_SHARDS}")" ]]
}

# --worker_id selects the filter task's files train-<worker_id>-*.
run_sharded reassign list "${NUM_SHARDS}" \
  "${PYTHON}" main.py \
  --model_name="${REASSIGN_MODEL}" \
  --use_tpu=False \
  --use_bfloat16=False \
  --task_name=imagenet \
  --mode=predict \
  --reassign_label=True \
  --predict_ckpt_path="${REASSIGN_CKPT}" \
  --label_data_dir="${INPUT_DIR}" \
  --file_prefix=train \
  --data_type=tfrecord \
  --num_shards="${NUM_SHARDS}" \
  --worker_id=0 \
  --eval_batch_size="${BATCH_SIZE}" \
  --output_dir="${OUTPUT_DIR}" \
  "${EXTRA[@]}"
