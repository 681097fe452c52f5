#!/bin/bash
# Writes SVHN as TFRecords: train/dev/test and unlabeled/extra shards plus
# dataset_info.json under $DATA_DIR. Skips when the complete output exists.
#
#   bash local_scripts/svhn/prepro.sh [flags...]
#   DRY_RUN=1 bash local_scripts/svhn/prepro.sh   # print the command
#
# Environment (defaults in brackets; settings in defaults.sh):
#   SOURCE         tfds | mat [tfds]: TFDS svhn_cropped, or the original
#                  train/test/extra_32x32.mat files in $RAW_DATA_DIR.
#   RAW_DATA_DIR   folder of the .mat files [data/svhn/raw]
#   TFDS_DATA_DIR  TFDS data_dir [TFDS' default, ~/tensorflow_datasets]
#   DATA_DIR       output folder [data/svhn/proc]
#   EXTRA_PREPRO_FLAGS  your flags for proc_svhn.py (word-split), before the
#                  arguments []
#   PYTHON, DRY_RUN   see local_scripts/common.sh
# Extra arguments are passed to proc_svhn.py, e.g. --overwrite or
# --full_train_data. Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/svhn/defaults.sh
source local_scripts/common.sh
show_help_if_asked "$@"

words_of EXTRA_PREPRO_FLAGS
run_command "${PYTHON:-python}" proc_svhn.py --task_name=svhn --source="${SOURCE}" --raw_data_dir="${RAW_DATA_DIR}" \
  --output_dir="${DATA_DIR}" ${TFDS_DATA_DIR:+"--tfds_data_dir=${TFDS_DATA_DIR}"} "${FLAG_WORDS[@]}" "$@"
