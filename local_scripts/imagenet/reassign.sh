#!/bin/bash
# Relabels the filtered data with a (better) model, e.g. the student of
# train.sh or run_offline.sh, keeping the images: each filtered record gets the
# new model's `probabilities`, `label` and `prob` (local_scripts/steps/
# reassign.sh). Train on the result with
#   UNLABEL_DIR=data/imagenet/predict/reassign bash local_scripts/imagenet/run_offline.sh
#
#   DRY_RUN=1 bash local_scripts/imagenet/reassign.sh   # print the commands
#
# Reads   $INPUT_DIR/train-0-%05d-of-%05d   (filter_unlabel.sh 0's output)
# Writes  $OUTPUT_DIR/train-0-%05d-of-%05d
# Finished shards are skipped, so re-running after a failure redoes only the
# missing ones.
#
# Environment (defaults in brackets; settings in defaults.sh):
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
#   PREDICT_FLAGS   flags of the prediction calls [empty]
#   EXTRA_FLAGS     your flags for every main.py call, after PREDICT_FLAGS
#   GPUS, NUM_WORKERS, PYTHON, DRY_RUN   see local_scripts/common.sh
# Arguments are appended to every Python call; a flag given twice keeps
# its last value.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/imagenet/defaults.sh
source local_scripts/steps/reassign.sh "$@"
