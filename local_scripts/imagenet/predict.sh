#!/bin/bash
# Step 2 of the offline pipeline: the teacher predicts class probabilities for
# every unlabeled image, one worker per GPU (or CPU worker), each taking every
# n-th shard (local_scripts/steps/predict.sh).
#
#   GPUS=0,1,2,3 TEACHER_CKPT=... bash local_scripts/imagenet/predict.sh [flags...]
#   DRY_RUN=1 bash local_scripts/imagenet/predict.sh   # print the commands
#
# Reads   $UNLABEL_DIR/$FILE_PREFIX-%05d-of-%05d   (see docs/imagenet.md)
# Writes  $DATA_ROOT/predict_label/train-info-%05d-of-%05d-00000  probabilities
#         $DATA_ROOT/info/info-%05d-of-%05d-00000.txt              image counts
# Finished shards are skipped, so re-running after a failure redoes only the
# missing ones. Next: filter_unlabel.sh 1, then filter_unlabel.sh 0.
#
# Environment (defaults in brackets; settings in defaults.sh):
#   TEACHER_CKPT   teacher model_dir or checkpoint prefix [ckpt/imagenet_teacher]
#   TEACHER_MODEL  architecture, used if TEACHER_CKPT has no model_params.txt
#                  (its input size follows) [efficientnet-b0]
#   DATA_DIR       labeled records [data/imagenet/proc]
#   UNLABEL_DIR    unlabeled records [$DATA_DIR/unlabeled]
#   FILE_PREFIX    name prefix of the unlabeled files [extra]
#   NUM_SHARDS     number of unlabeled files [128]
#   DATA_ROOT      output root [data/imagenet/predict]
#   LOG_DIR        worker logs [$DATA_ROOT/logs]
#   BATCH_SIZE     images per prediction batch [64]
#   PREDICT_FLAGS  flags of the prediction calls [empty]
#   EXTRA_FLAGS    your flags for every main.py call, after PREDICT_FLAGS
#   GPUS, NUM_WORKERS, PYTHON, DRY_RUN   see local_scripts/common.sh
# Arguments are appended to every Python call; a flag given twice keeps
# its last value.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/imagenet/defaults.sh
source local_scripts/steps/predict.sh "$@"
