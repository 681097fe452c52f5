#!/bin/bash
# Step 3 on MNIST: filters the teacher's predictions by confidence and
# balances the classes, in two passes (local_scripts/steps/filter_unlabel.sh;
# the algorithm: docs/pseudo_labels.md):
#
#   bash local_scripts/mnist/filter_unlabel.sh 1   # pass 1: per-shard statistics
#   bash local_scripts/mnist/filter_unlabel.sh 0   # pass 2: filtered, balanced data
#   DRY_RUN=1 bash local_scripts/mnist/filter_unlabel.sh 1   # print the commands
#
# Environment (defaults in brackets; settings in defaults.sh):
#   DATA_DIR       prepro.sh's output [data/mnist/proc]
#   UNLABEL_DIR    unlabeled records [$DATA_DIR/unlabeled]
#   NUM_SHARDS     number of unlabeled files [defaults.sh]
#   DATA_ROOT      prediction root of predict.sh [data/mnist/predict]
#   LOG_DIR        worker logs [$DATA_ROOT/logs]
#   NUM_IMAGE      target images per class [defaults.sh]
#   MIN_THRESHOLD  lowest confidence kept [defaults.sh]
#   NUM_WORKERS    parallel CPU workers [number of CPUs, at most NUM_SHARDS]
#   FILTER_FLAGS   flags of filter_unlabel_data.py [empty]
#   EXTRA_FLAGS    main.py flags: not passed to the filter (a note says so)
#   GPUS, DRY_RUN  see local_scripts/common.sh
#   PYTHON         interpreter [.venv/bin/python if present, else python]
# Arguments after the pass number are appended to every Python call; a
# flag given twice keeps its last value.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/steps/filter_unlabel.sh "$@"
