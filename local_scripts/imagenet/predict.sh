#!/bin/bash
# Step 2 of the offline pipeline: the teacher predicts class probabilities for
# every unlabeled image, one worker per GPU (or CPU worker), each taking every
# n-th shard.
#
# Reads   $UNLABEL_DIR/$FILE_PREFIX-%05d-of-%05d   (see docs/imagenet.md)
# Writes  $DATA_ROOT/predict_label/train-info-%05d-of-%05d-00000  probabilities
#         $DATA_ROOT/info/info-%05d-of-%05d-00000.txt              image counts
# Finished shards are skipped, so re-running after a failure redoes only the
# missing ones. Next: filter_unlabel.sh 1, then filter_unlabel.sh 0.
#
# Environment (defaults in brackets):
#   TEACHER_CKPT   teacher model_dir or checkpoint prefix [ckpt/imagenet_teacher]
#   TEACHER_MODEL  architecture, used if TEACHER_CKPT has no model_params.txt
#                  (its input size follows) [efficientnet-b0]
#   UNLABEL_DIR    unlabeled records [data/imagenet/proc/unlabeled]
#   FILE_PREFIX    name prefix of the unlabeled files [extra]
#   NUM_SHARDS     number of unlabeled files [128]
#   DATA_ROOT      output root [data/imagenet/predict]
#   LOG_DIR        worker logs [$DATA_ROOT/logs]
#   BATCH_SIZE     images per prediction batch [64]
#   GPUS, NUM_WORKERS, PYTHON, EXTRA_FLAGS   see local_scripts/common.sh
# Arguments are appended to every Python call.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/common.sh

TEACHER_CKPT="${TEACHER_CKPT:-ckpt/imagenet_teacher}"
TEACHER_MODEL="${TEACHER_MODEL:-efficientnet-b0}"
UNLABEL_DIR="${UNLABEL_DIR:-data/imagenet/proc/unlabeled}"
FILE_PREFIX="${FILE_PREFIX:-extra}"
NUM_SHARDS="${NUM_SHARDS:-128}"
DATA_ROOT="${DATA_ROOT:-data/imagenet/predict}"
LOG_DIR="${LOG_DIR:-${DATA_ROOT}/logs}"
BATCH_SIZE="${BATCH_SIZE:-64}"
collect_extra_flags "$@"
require_checkpoint "${TEACHER_CKPT}" TEACHER_CKPT \
  "Point TEACHER_CKPT at the teacher's checkpoint."
require_shards "${UNLABEL_DIR}" "${FILE_PREFIX}" "${NUM_SHARDS}" UNLABEL_DIR
setup_workers any

shard_done() {
  [[ -f "$(printf '%s/predict_label/train-info-%05d-of-%05d-00000' "${DATA_ROOT}" "$1" "${NUM_SHARDS}")" &&
    -f "$(printf '%s/info/info-%05d-of-%05d-00000.txt' "${DATA_ROOT}" "$1" "${NUM_SHARDS}")" ]]
}

# --label_data_dir is the folder of the images to predict (the published
# script pointed it at the output root, where there are none). Each worker
# predicts whole shards, hence --worker_id=0 of --total_replicas=1.
run_sharded predict list "${NUM_SHARDS}" \
  "${PYTHON}" main.py \
  --model_name="${TEACHER_MODEL}" \
  --use_tpu=False \
  --use_bfloat16=False \
  --task_name=imagenet \
  --mode=predict \
  --predict_ckpt_path="${TEACHER_CKPT}" \
  --label_data_dir="${UNLABEL_DIR}" \
  --file_prefix="${FILE_PREFIX}" \
  --data_type=tfrecord \
  --num_shards="${NUM_SHARDS}" \
  --worker_id=0 \
  --total_replicas=1 \
  --eval_batch_size="${BATCH_SIZE}" \
  --info_dir="${DATA_ROOT}/info" \
  --output_dir="${DATA_ROOT}/predict_label" \
  "${EXTRA[@]}"
