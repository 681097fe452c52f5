#!/bin/bash
# Step 3 of the offline pipeline: filters the teacher's predictions by
# confidence and balances the classes, in two passes over all shards
# (local_scripts/steps/filter_unlabel.sh; the algorithm: docs/pseudo_labels.md).
#
#   bash local_scripts/svhn/filter_unlabel.sh 1   # pass 1: per-shard statistics
#   bash local_scripts/svhn/filter_unlabel.sh 0   # pass 2: filtered, balanced data
#   DRY_RUN=1 bash local_scripts/svhn/filter_unlabel.sh 1   # print the commands
#
# Pass 2 needs the statistics of every shard; if some are missing it stops
# at once and lists them (nothing waits or polls). Both passes run shards in
# parallel on CPU workers, each worker handling all its shards in one call;
# a failed shard does not stop the worker's other shards, and the failed
# ones are listed at the end. A re-run redoes the pass and gives identical
# files.
#
# Reads   $UNLABEL_DIR/$FILE_PREFIX-*, $DATA_ROOT/predict_label, $DATA_ROOT/info
# Writes  pass 1: $DATA_ROOT/prelim_stats/prelim_stats_%05d_0.json
#         pass 2: $DATA_ROOT/filter_data/data/train-0-%05d-of-%05d (+ stats/,
#                 threshold.json, samples/); then run_offline.sh.
#
# Environment (defaults in brackets; settings in defaults.sh):
#   DATA_DIR       prepro.sh's output [data/svhn/proc]
#   UNLABEL_DIR    unlabeled records [$DATA_DIR/unlabeled]
#   FILE_PREFIX    name prefix of the unlabeled files [extra]
#   NUM_SHARDS     number of unlabeled files [128]
#   DATA_ROOT      prediction root of predict.sh [data/svhn/predict]
#   LOG_DIR        worker logs [$DATA_ROOT/logs]
#   NUM_IMAGE      target images per class [53113, as published]
#   MIN_THRESHOLD  lowest confidence kept [0.3, as published]
#   NUM_WORKERS or GPUS   number of parallel CPU workers (with GPUS, one per
#                  listed id; filtering never uses a GPU) [1]
#   FILTER_FLAGS   flags of filter_unlabel_data.py [empty]
#   EXTRA_FLAGS    main.py flags: not passed to the filter (a note says so)
#   PYTHON, DRY_RUN   see local_scripts/common.sh
# Arguments after the pass number are appended to every Python call; a
# flag given twice keeps its last value.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/svhn/defaults.sh
source local_scripts/steps/filter_unlabel.sh "$@"
