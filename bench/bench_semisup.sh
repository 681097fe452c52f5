#!/bin/bash
# The semi-supervised table, as the field reports it, for one dataset over seeds:
#
#   bash bench/bench_semisup.sh                     # MNIST, seeds 0 1 2
#   DATASET=fashion bash bench/bench_semisup.sh     # Fashion-MNIST (installs Debian's
#                                                   # dataset-fashion-mnist if missing)
#   DATASET=fashion SEEDS="0 1 2 3 4" bash bench/bench_semisup.sh
#
# Per seed S, in $OUT_ROOT/seed<S>/ (every part skipped when already done):
# 1. local_scripts/loop.sh: the teacher on the 1,000 labeled images and ROUNDS
#    noisy-student rounds with the demo's defaults (local_scripts/mnist/
#    defaults.sh and local_scripts/steps/cpu_recipe.sh), SEED=S.
# 2. references/teacher_longer/: the same teacher trained LONGER_FACTOR times as many
#    epochs (the convergence check: a trained teacher gains little on dev).
# 3. references/supervised/: the fully supervised reference, the same network and
#    augmentation trained on every non-dev training image with its true label
#    (55,000: the labeled images and every image the loop uses unlabeled),
#    SUPERVISED_EPOCHS epochs of them.
# Then bench/semisup_report.py writes $OUT_ROOT/semisup.json and prints per
# seed and as mean ± std: test top-1 of the teacher, each student and the
# fully supervised model, the gap closed by each student
# ((student - teacher) / (supervised - teacher)), the teacher's top-1 on its
# own labeled images and on dev (x1 / longer), the pseudo labels' accuracy
# (all / kept), the images processed by the loop's training (its compute,
# machine-independent) and the wall times (machine-dependent, with the machine),
# and checks the goals (see semisup_report.py).
#
# The data is the same for every seed (proc_mnist.py's own seed picks the
# labeled subset and dev), so the seeds measure the training's randomness.
# Run one benchmark at a time on a small machine: the times would count both.
#
# Environment (defaults in brackets):
#   DATASET            mnist | fashion [mnist]
#   SEEDS              seeds, space-separated [0 1 2, or 0 .. N-1 when N is set]
#   N                  number of seeds when SEEDS is not set [3]
#   ROUNDS             noisy-student rounds [defaults.sh: 2]
#   LONGER_FACTOR      the convergence check's teacher trains this many times
#                      TEACHER_EPOCHS; 0 skips it [3]
#   SUPERVISED_EPOCHS  epochs of the fully supervised reference [30; whether
#                      30 epochs converge is not measured yet: compare 2x]
#   OUT_ROOT           outputs [output/bench_semisup/$DATASET]
#   FASHION_RAW_DIR    Fashion-MNIST's IDX files [/usr/share/datasets/fashion-mnist]
#   DATASET_DIR        where the prepared data goes (proc/, proc_supervised/)
#                      [data/$DATASET]
#   EXTRA_PREPRO_FLAGS your flags for proc_mnist.py (word-split), e.g.
#                      --num_dev=500 (read by local_scripts/mnist/prepro.sh) []
#   PYTHON             interpreter [.venv/bin/python if present, else python]
# The recipe's variables (TEACHER_EPOCHS, STUDENT_STEPS, TEACHER_FLAGS, ...)
# and the users' (EXTRA_TRAIN_FLAGS, ...; docs/scripts.md) pass through to
# loop.sh and the training scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
source local_scripts/mnist/defaults.sh
show_help_if_asked "$@"
refuse_arguments "$@"
dry_run && die "DRY_RUN: see the commands of one seed with DRY_RUN=1 bash local_scripts/loop.sh."
export PYTHON="${PYTHON:-python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

DATASET="${DATASET:-mnist}"
FASHION_RAW_DIR="${FASHION_RAW_DIR:-/usr/share/datasets/fashion-mnist}"
case "${DATASET}" in
  mnist) source_flags=(SOURCE="${SOURCE}") ;;
  fashion) source_flags=(SOURCE=idx RAW_DATA_DIR="${FASHION_RAW_DIR}") ;;
  *) die "DATASET=${DATASET}: expected mnist or fashion." ;;
esac
if [[ -z "${SEEDS:-}" ]]; then
  N="${N:-3}"
  [[ "${N}" =~ ^[1-9][0-9]*$ ]] || die "N=${N}: expected a positive number of seeds."
  SEEDS="$(seq -s ' ' 0 $((N - 1)))"
fi
read -ra SEED_LIST <<<"${SEEDS}"
((${#SEED_LIST[@]})) || die "SEEDS is empty."
for s in "${SEED_LIST[@]}"; do
  [[ "${s}" =~ ^[0-9]+$ ]] || die "SEEDS=\"${SEEDS}\": '${s}' is not a non-negative integer."
done
[[ "${ROUNDS}" =~ ^[0-9]+$ ]] || die "ROUNDS=${ROUNDS}: expected a number of rounds."
LONGER_FACTOR="${LONGER_FACTOR:-3}"
SUPERVISED_EPOCHS="${SUPERVISED_EPOCHS:-30}"
[[ "${LONGER_FACTOR}" =~ ^[0-9]+([.][0-9]+)?$ ]] ||
  die "LONGER_FACTOR=${LONGER_FACTOR}: expected a non-negative number."
if awk -v f="${LONGER_FACTOR}" 'BEGIN { exit !(f == 0) }'; then LONGER_FACTOR=0; fi
if ! [[ "${SUPERVISED_EPOCHS}" =~ ^[0-9]+([.][0-9]+)?$ ]] ||
  ! awk -v e="${SUPERVISED_EPOCHS}" 'BEGIN { exit !(e > 0) }'; then
  die "SUPERVISED_EPOCHS=${SUPERVISED_EPOCHS}: expected a positive number."
fi
OUT_ROOT="${OUT_ROOT:-output/bench_semisup/${DATASET}}"
DATASET_DIR="${DATASET_DIR:-data/${DATASET}}"
DATA_DIR="${DATASET_DIR}/proc"
SUPERVISED_DATA_DIR="${DATASET_DIR}/proc_supervised"
mkdir -p "${OUT_ROOT}"

if [[ "${DATASET}" == fashion && ! -d "${FASHION_RAW_DIR}" ]]; then
  echo "== installing Debian's dataset-fashion-mnist (${FASHION_RAW_DIR})"
  command -v apt-get >/dev/null ||
    die "${FASHION_RAW_DIR} is missing: put Fashion-MNIST's four IDX .gz files there (FASHION_RAW_DIR)."
  { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } >"${OUT_ROOT}/install.log" 2>&1 ||
    die "apt-get install dataset-fashion-mnist failed (log: ${OUT_ROOT}/install.log)."
fi

# prepare NAME DIR LABELED_PER_CLASS: the data, once (prepro.sh skips complete output).
prepare() {
  echo "== data ($1, the same for every seed): $2"
  local log="${OUT_ROOT}/prepare_$1.log" status=0
  new_file "${log}"
  CHILD_SIGNALLED=0
  run_child env "${source_flags[@]}" DATA_DIR="$2" LABELED_PER_CLASS="$3" \
    bash local_scripts/mnist/prepro.sh >>"${log}" 2>&1 || status=$?
  ((status)) && [[ "${CHILD_SIGNALLED}" == 1 ]] && exit "${status}"
  if ((status)); then
    tail -n 25 "${log}" >&2
    die "data preparation failed (log: ${log})."
  fi
}
prepare semisup "${DATA_DIR}" "${LABELED_PER_CLASS}"
prepare supervised "${SUPERVISED_DATA_DIR}" -1

dirs=()
for s in "${SEED_LIST[@]}"; do
  out="${OUT_ROOT}/seed${s}"
  echo "== seed ${s}: ${out}"
  status=0
  CHILD_SIGNALLED=0
  run_child env SEED="${s}" OUT="${out}" ROUNDS="${ROUNDS}" DATA_DIR="${DATA_DIR}" \
    TASK_NAME=mnist bash local_scripts/loop.sh || status=$?
  # Stopped by a signal: loop.sh's status (re-run to resume), not a failure.
  ((status)) && [[ "${CHILD_SIGNALLED}" == 1 ]] && exit "${status}"
  ((status)) && die "seed ${s}: loop.sh failed (logs: ${out}/logs). Re-run to continue where it stopped."
  # The references, resumable as loop.sh's steps (run_step), in a folder of
  # their own: loop.sh's report counts every marker of its .done/ as the loop's.
  OUT="${out}/references"
  mkdir -p "${OUT}/.done" "${OUT}/logs"
  seed_flags=(--seed="${s}" --deterministic=True)
  if [[ "${LONGER_FACTOR}" != 0 ]]; then
    longer=$(awk -v e="${TEACHER_EPOCHS}" -v f="${LONGER_FACTOR}" 'BEGIN { print e * f }')
    run_step teacher_longer env MODEL_DIR="${OUT}/teacher_longer" DATA_DIR="${DATA_DIR}" \
      bash local_scripts/mnist/train_teacher.sh "${seed_flags[@]}" --train_epochs="${longer}"
  fi
  # The reference is evaluated on dev and test only: its 55,000 training
  # images would cost more to evaluate than they tell.
  run_step supervised env MODEL_DIR="${OUT}/supervised" DATA_DIR="${SUPERVISED_DATA_DIR}" \
    bash local_scripts/mnist/train_teacher.sh "${seed_flags[@]}" \
    --train_epochs="${SUPERVISED_EPOCHS}" --eval_subsets=dev,test
  dirs+=("${out}")
done

echo
echo "== ${DATASET}, ${#dirs[@]} seed(s): ${SEEDS}"
"${PYTHON}" bench/semisup_report.py --dataset="${DATASET}" \
  --output="${OUT_ROOT}/semisup.json" "${dirs[@]}"
