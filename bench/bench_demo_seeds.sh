#!/bin/bash
# The MNIST demo's gain as a distribution over seeds, not one draw:
#
#   bash bench/bench_demo_seeds.sh                  # seeds 0 1 2, 11-12 min each on 2 CPU cores (2026-12-04)
#   SEEDS="0 1 2 3 4" bash bench/bench_demo_seeds.sh
#   N=5 bash bench/bench_demo_seeds.sh              # the same: seeds 0 .. N-1
#
# 1. Prepares the demo's data once (local_scripts/mnist/prepro.sh, as demo.sh
#    does: 1,000 labeled digits, 100 per class, 5,000 dev, the 10,000 test
#    digits, the other 54,000 training digits unlabeled). The data is the
#    SAME for every seed (proc_mnist.py's own --seed, default 0, picks the
#    labeled subset; SEED below does not touch it), so the seeds measure the
#    training's randomness only: weight init, dropout, stochastic depth,
#    shuffles, RandAugment, and the filter's sampling.
# 2. For each seed S, runs local_scripts/mnist/loop.sh (teacher + ROUNDS
#    noisy-student rounds, the demo's settings of local_scripts/mnist/
#    defaults.sh) with SEED=S in its own folder $OUT_ROOT/seed<S>; loop.sh
#    passes --seed=S (and --deterministic=True) to every main.py call and
#    --seed=S to the filter, so each seed's run is reproducible.
# 3. bench/demo_seeds_report.py reads each seed's results.json (loop_report.py)
#    and writes $OUT_ROOT/bench_demo_seeds.json: per seed and round the test,
#    dev and train error, the ratio to that seed's teacher, the run time, and
#    mean ± std over the seeds; prints the table and the goals (round 1's test
#    error <= 0.8 x the teacher's for every seed; round 2 at most 0.1 point
#    worse than round 1; <= 900 s per seed).
#
# A re-run skips every finished step (loop.sh's .done markers); delete
# $OUT_ROOT/seed<S> to re-measure seed S. The seeds run one after the other:
# never run two of these at once on a small machine (the times would count
# both).
#
# Environment (defaults in brackets):
#   SEEDS          seeds to run, space-separated [0 1 2, or 0 .. N-1 when N is set]
#   N              number of seeds when SEEDS is not set [3]
#   ROUNDS         noisy-student rounds per seed [defaults.sh: 2]
#   OUT_ROOT       output folder [output/bench_demo_seeds]
#   DATA_DIR       prepared data [defaults.sh: data/mnist/proc]
#   DETERMINISTIC  passed to loop.sh [1]
#   PYTHON         interpreter [.venv/bin/python if present, else python]
# Settings of the models and steps (MODEL_FLAGS, TEACHER_STEPS,
# STUDENT_STEPS, TEACHER_FLAGS, STUDENT_FLAGS, INIT_STUDENT, NUM_IMAGE,
# LABELED_PER_CLASS, ...) pass through to prepro.sh and loop.sh, see
# local_scripts/mnist/defaults.sh and local_scripts/steps/cpu_recipe.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source local_scripts/mnist/defaults.sh
show_help_if_asked "$@"
dry_run && die "DRY_RUN: see the commands of one seed with DRY_RUN=1 bash local_scripts/mnist/loop.sh."
export PYTHON="${PYTHON:-python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

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
OUT_ROOT="${OUT_ROOT:-output/bench_demo_seeds}"
mkdir -p "${OUT_ROOT}"

echo "== data (the same for every seed): ${DATA_DIR}"
if ! DATA_DIR="${DATA_DIR}" LABELED_PER_CLASS="${LABELED_PER_CLASS}" \
  bash local_scripts/mnist/prepro.sh >"${OUT_ROOT}/prepare_data.log" 2>&1; then
  tail -n 25 "${OUT_ROOT}/prepare_data.log" >&2
  die "data preparation failed (log: ${OUT_ROOT}/prepare_data.log)."
fi

dirs=()
for s in "${SEED_LIST[@]}"; do
  out="${OUT_ROOT}/seed${s}"
  echo "== seed ${s}: ${out}"
  if ! SEED="${s}" OUT="${out}" ROUNDS="${ROUNDS}" DATA_DIR="${DATA_DIR}" TASK_NAME=mnist \
    bash local_scripts/mnist/loop.sh; then
    die "seed ${s}: loop.sh failed (logs: ${out}/logs). Re-run to continue where it stopped."
  fi
  dirs+=("${out}")
done

echo
echo "== ${#dirs[@]} seed(s): ${SEEDS}"
"${PYTHON}" bench/demo_seeds_report.py --output="${OUT_ROOT}/bench_demo_seeds.json" "${dirs[@]}"
