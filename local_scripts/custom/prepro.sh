#!/bin/bash
# Writes your images as the task 'custom' (proc_folder.py): labeled train-*,
# dev-*/test-*, unlabeled/extra-*, dataset_info.json and skipped.txt under
# $DATA_DIR. Finished shards are kept; a complete output is skipped.
#
#   LABELED_DIR=my/labeled UNLABELED_DIR=my/unlabeled bash local_scripts/custom/prepro.sh
#   TFDS_NAME=stl10 TFDS_UNLABELED_SPLIT=unlabelled bash local_scripts/custom/prepro.sh
#   DRY_RUN=1 ... bash local_scripts/custom/prepro.sh   # print the command
#
# Environment (defaults in brackets; docs/own_data.md):
#   LABELED_DIR      one sub-folder per class (class index: sorted names)
#   DEV_DIR, TEST_DIR  the same class folders, held out
#   DEV_FRACTION     fraction of each class held out as dev instead [0]
#   UNLABELED_DIR    unlabeled images, searched recursively
#   UNLABELED_GLOB   unlabeled images by glob (** recursive)
#   UNLABELED_LIST   a file of unlabeled image paths, one a line
#   UNLABELED_CLASS_DIR  unlabeled images whose classes you know, in the class
#                    folders of LABELED_DIR: kept as true labels only, never
#                    trained on; the loop's report then measures the pseudo
#                    labels (accuracy per class, confusion matrix)
#   TFDS_NAME        a TFDS dataset instead of folders, with
#                    TFDS_LABELED_SPLIT [train], TFDS_TEST_SPLIT [test],
#                    TFDS_UNLABELED_SPLIT []
#   RANDOM_FLIP      True | False: may training flip images [True]
#   PREPRO_WORKERS   parallel conversion processes [number of CPUs]
#   DATA_DIR         output folder [data/custom/proc]
#   EXTRA_PREPRO_FLAGS  your flags for proc_folder.py (word-split), before
#                    the arguments []
#   PYTHON           interpreter [.venv/bin/python if present, else python]
#   DRY_RUN          see local_scripts/common.sh
# Extra arguments are passed to proc_folder.py, e.g. --strict or --overwrite.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/custom/defaults.sh
show_help_if_asked "$@"
[[ -n "${LABELED_DIR}" || -n "${TFDS_NAME}" ]] ||
  die "set LABELED_DIR (one sub-folder per class) or TFDS_NAME."

words_of EXTRA_PREPRO_FLAGS
run_command "${PYTHON:-python}" proc_folder.py --output_dir="${DATA_DIR}" --num_workers="${PREPRO_WORKERS}" \
  --random_flip="${RANDOM_FLIP}" --dev_fraction="${DEV_FRACTION}" \
  ${LABELED_DIR:+"--labeled_dir=${LABELED_DIR}"} ${DEV_DIR:+"--dev_dir=${DEV_DIR}"} \
  ${TEST_DIR:+"--test_dir=${TEST_DIR}"} ${UNLABELED_DIR:+"--unlabeled_dir=${UNLABELED_DIR}"} \
  ${UNLABELED_GLOB:+"--unlabeled_glob=${UNLABELED_GLOB}"} \
  ${UNLABELED_LIST:+"--unlabeled_list=${UNLABELED_LIST}"} \
  ${UNLABELED_CLASS_DIR:+"--unlabeled_class_dir=${UNLABELED_CLASS_DIR}"} \
  ${TFDS_NAME:+"--tfds_name=${TFDS_NAME}" "--tfds_labeled_split=${TFDS_LABELED_SPLIT}" \
    "--tfds_test_split=${TFDS_TEST_SPLIT}"} \
  ${TFDS_UNLABELED_SPLIT:+"--tfds_unlabeled_split=${TFDS_UNLABELED_SPLIT}"} \
  ${TFDS_DATA_DIR:+"--tfds_data_dir=${TFDS_DATA_DIR}"} "${FLAG_WORDS[@]}" "$@"
