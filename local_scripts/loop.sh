#!/bin/bash
# The whole Noisy Student method, for ROUNDS rounds:
#
#   round 0   train_teacher.sh    the teacher learns from the labeled images
#   round r   predict.sh          the model of round r-1 labels the unlabeled images
#             filter_unlabel.sh   1: statistics; 0: confident images, classes balanced
#             run_offline.sh      a noisy student (RandAugment, dropout, stochastic
#                                 depth) learns from labeled + pseudo-labeled images;
#                                 it is the teacher of round r+1
#
# then writes $OUT/results.json and $OUT/summary.png (loop_report.py) and
# prints test accuracy per round.
#
# The steps are the scripts of local_scripts/$TASK_NAME/, so the same loop
# runs every task: local_scripts/<task>/loop.sh runs it with that TASK_NAME
# (mnist, svhn, custom). SVHN has the published settings (EfficientNet-B0;
# needs local_scripts/svhn/prepro.sh's data and a GPU or TPU to finish in
# hours); custom, your own images (docs/own_data.md).
#
# Resumable: a finished step leaves $OUT/.done/<step> (its run time in
# seconds) and is skipped by a re-run; an interrupted step is re-run, and
# continues where it stopped (training resumes from its last checkpoint,
# prediction skips finished shards). To redo a step and everything after
# it, delete its marker and output, e.g. rm -r $OUT/round2_* $OUT/.done/round2_*.
# A larger ROUNDS on a finished run trains only the new rounds.
#
# Layout of $OUT:
#   round0_teacher/             teacher model_dir (checkpoints, TensorBoard logs,
#                               eval_results.json)
#   round<r>_pseudo/            predict_label/, info/, prelim_stats/, filter_data/
#   round<r>_student/           student model_dir
#   logs/<step>.log             full output of each step
#
# Environment (defaults in brackets):
#   TASK_NAME     mnist | svhn | custom [mnist]: the steps and settings are
#                 those of local_scripts/$TASK_NAME/ (its defaults.sh)
#   ROUNDS        noisy-student rounds after the teacher [the task's
#                 defaults.sh]
#   OUT           output folder [output/${TASK_NAME}_loop]
#   DATA_DIR      labeled data of prepro.sh [the task's defaults.sh:
#                 data/${TASK_NAME}/proc]
#   UNLABEL_DIR   raw unlabeled records [$DATA_DIR/unlabeled]
#   INIT_STUDENT  1: each student starts from its teacher's weights
#                 (--init_model_path); 0: from scratch [the task's
#                 defaults.sh: 0]
#   SEED          random seed of the whole run: passed as --seed to every
#                 main.py call (teacher, prediction, students; weights, dropout,
#                 stochastic depth, shuffles, RandAugment) and to the filter
#                 (its sampling and shuffling) [0]
#   DETERMINISTIC 1: also --deterministic=True, so a run with the same SEED,
#                 data and settings is bit-reproducible; 0: faster
#                 non-deterministic kernels, SEED still seeds every draw [1]
#   EXTRA_TEACHER_FLAGS, EXTRA_STUDENT_FLAGS
#                 your flags of the teacher's, the students' training calls
#                 (read by local_scripts/steps/train.sh) []
#   PYTHON        interpreter [.venv/bin/python if present, else python]
#   DRY_RUN       1: print every step's commands instead of running them
#                 (no markers, logs or report) [0]
# The step scripts' own variables (MODEL_FLAGS, TEACHER_EPOCHS, STUDENT_STEPS,
# TEACHER_FLAGS, NUM_IMAGE, GPUS, EXTRA_FLAGS, EXTRA_TRAIN_FLAGS, ...; every
# one: docs/scripts.md) pass through; the step scripts' arguments that the
# loop adds (--seed, --init_model_path) come last.
set -euo pipefail
cd "$(dirname "$0")/.."
source local_scripts/common.sh
show_help_if_asked "$@"
refuse_arguments "$@"
use_venv_python

TASK_NAME="${TASK_NAME:-mnist}"
STEPS="local_scripts/${TASK_NAME}"
for step in defaults train_teacher predict filter_unlabel run_offline; do
  [[ -f "${STEPS}/${step}.sh" ]] || die "TASK_NAME=${TASK_NAME}: no ${STEPS}/${step}.sh."
done
# shellcheck source=local_scripts/mnist/defaults.sh
source "${STEPS}/defaults.sh"
source local_scripts/steps/settings.sh
OUT="${OUT:-output/${TASK_NAME}_loop}"
UNLABEL_DIR="${UNLABEL_DIR:-${RAW_UNLABEL_DIR}}"
SEED="${SEED:-0}"
DETERMINISTIC="${DETERMINISTIC:-1}"
[[ "${SEED}" =~ ^[0-9]+$ ]] || die "SEED=${SEED}: expected a non-negative integer."
[[ "${DETERMINISTIC}" == 0 || "${DETERMINISTIC}" == 1 ]] ||
  die "DETERMINISTIC=${DETERMINISTIC}: expected 0 or 1."
# Flags of every main.py call; the filter only takes --seed.
SEED_FLAGS=(--seed="${SEED}")
if [[ "${DETERMINISTIC}" == 1 ]]; then
  SEED_FLAGS+=(--deterministic=True)
fi

[[ "${ROUNDS}" =~ ^[0-9]+$ ]] || die "ROUNDS=${ROUNDS}: expected a number of rounds (0, 1, 2, ...)."
require_dir "${DATA_DIR}" DATA_DIR "Write the data with ${STEPS}/prepro.sh."
require_dir "${UNLABEL_DIR}" UNLABEL_DIR "Write the data with ${STEPS}/prepro.sh."
dry_run || mkdir -p "${OUT}/.done" "${OUT}/logs"
export TASK_NAME PYTHON DATA_DIR

# A finished training run has evaluated its last checkpoint.
check_trained() {
  dry_run && return 0
  [[ -f "$1/eval_results.json" ]] || die "$1 has no eval_results.json after training (see ${OUT}/logs)."
}

echo "Noisy Student on ${TASK_NAME}: teacher + ${ROUNDS} round(s) in ${OUT} (SEED=${SEED}, DETERMINISTIC=${DETERMINISTIC})"
echo "round 0: teacher"
TEACHER_DIR="${OUT}/round0_teacher"
run_step round0_teacher env MODEL_DIR="${TEACHER_DIR}" \
  bash "${STEPS}/train_teacher.sh" "${SEED_FLAGS[@]}"
check_trained "${TEACHER_DIR}"

for ((round = 1; round <= ROUNDS; round++)); do
  echo "round ${round}: teacher ${TEACHER_DIR}"
  pseudo="${OUT}/round${round}_pseudo"
  student="${OUT}/round${round}_student"
  run_step "round${round}_predict" env TEACHER_CKPT="${TEACHER_DIR}" UNLABEL_DIR="${UNLABEL_DIR}" \
    DATA_ROOT="${pseudo}" LOG_DIR="${pseudo}/logs" bash "${STEPS}/predict.sh" "${SEED_FLAGS[@]}"
  # When no image passes the threshold, pass 2 stops with the filter's own
  # message (lower MIN_THRESHOLD or train the teacher longer); run_step shows it.
  run_step "round${round}_filter1" env UNLABEL_DIR="${UNLABEL_DIR}" DATA_ROOT="${pseudo}" \
    LOG_DIR="${pseudo}/logs" bash "${STEPS}/filter_unlabel.sh" 1 --seed="${SEED}"
  run_step "round${round}_filter2" env UNLABEL_DIR="${UNLABEL_DIR}" DATA_ROOT="${pseudo}" \
    LOG_DIR="${pseudo}/logs" bash "${STEPS}/filter_unlabel.sh" 0 --seed="${SEED}"
  init=()
  if [[ "${INIT_STUDENT}" == 1 ]]; then
    init=(--init_model_path="${TEACHER_DIR}")
  fi
  run_step "round${round}_student" env UNLABEL_DIR="${pseudo}/filter_data/data" \
    MODEL_DIR="${student}" bash "${STEPS}/run_offline.sh" "${init[@]}" "${SEED_FLAGS[@]}"
  check_trained "${student}"
  TEACHER_DIR="${student}"
done

run_command "${PYTHON:-python}" loop_report.py --output_dir="${OUT}" --rounds="${ROUNDS}" \
  --setting="task_name=${TASK_NAME}" --setting="data_dir=${DATA_DIR}" \
  --setting="unlabel_dir=${UNLABEL_DIR}" --setting="init_student=${INIT_STUDENT}" \
  --setting="seed=${SEED}" --setting="deterministic=${DETERMINISTIC}" \
  --setting="num_image=${NUM_IMAGE}" --setting="min_threshold=${MIN_THRESHOLD}"
