#!/bin/bash
# The whole Noisy Student loop on your own images: teacher -> predict ->
# filter/balance -> student, for ROUNDS rounds [1], with the settings that
# defaults.sh derives from $DATA_DIR/dataset_info.json (run prepro.sh first).
# It is local_scripts/loop.sh with TASK_NAME=custom: the same layout
# of $OUT [output/custom_loop], markers, resumption, logs and report
# (results.json, summary.png, round<r>_pseudo/pseudo_labels.png).
#
#   bash local_scripts/custom/loop.sh
#   ROUNDS=2 TEACHER_EPOCHS=50 STUDENT_STEPS=1000 bash local_scripts/custom/loop.sh
#   DRY_RUN=1 bash local_scripts/custom/loop.sh   # print every step's commands
#
# Every setting of defaults.sh and of local_scripts/loop.sh can be
# overridden from the environment (docs/own_data.md, docs/scripts.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
TASK_NAME=custom exec bash local_scripts/loop.sh "$@"
