#!/bin/bash
# Writes SVHN as TFRecords: train/dev/test and unlabeled/extra shards plus
# dataset_info.json under $DATA_DIR. Skips when the complete output exists.
#
# Environment (defaults in brackets):
#   SOURCE         tfds | mat [tfds]: TFDS svhn_cropped, or the original
#                  train/test/extra_32x32.mat files in $RAW_DATA_DIR.
#   RAW_DATA_DIR   folder of the .mat files [data/svhn/raw]
#   TFDS_DATA_DIR  TFDS data_dir [TFDS' default, ~/tensorflow_datasets]
#   DATA_DIR       output folder [data/svhn/proc]
#   PYTHON         interpreter [python]
# Extra arguments are passed to proc_svhn.py, e.g. --overwrite or
# --full_train_data. Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."

SOURCE="${SOURCE:-tfds}"
RAW_DATA_DIR="${RAW_DATA_DIR:-data/svhn/raw}"
DATA_DIR="${DATA_DIR:-data/svhn/proc}"

args=(--task_name=svhn --source="${SOURCE}" --raw_data_dir="${RAW_DATA_DIR}" --output_dir="${DATA_DIR}")
if [[ -n "${TFDS_DATA_DIR:-}" ]]; then
  args+=(--tfds_data_dir="${TFDS_DATA_DIR}")
fi

"${PYTHON:-python}" proc_svhn.py "${args[@]}" "$@"
