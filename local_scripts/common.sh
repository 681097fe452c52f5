# shellcheck shell=bash
# Helpers shared by the step scripts (local_scripts/steps/) and the drivers
# of local_scripts/<task>/. Sourced, never run:   source local_scripts/common.sh
#
# Help and dry runs:
#   show_help_if_asked ARG...          -h/--help first: prints the running
#                                      script's header comment and exits 0
#   refuse_arguments ARG...            stops when given any: for the scripts
#                                      that run several steps (loop, demo)
#   run_command COMMAND...             runs COMMAND (run_child); DRY_RUN=1 prints it
#   run_child COMMAND...               runs COMMAND, passing SIGTERM/SIGINT on to
#                                      it as SIGTERM and waiting for it to end;
#                                      returns its status (CHILD_SIGNALLED=1
#                                      after a signal)
#   new_file PATH                      an empty regular file at PATH; whatever
#                                      was there (a planted symlink) is removed,
#                                      never followed. Outputs are made with it
#                                      and then appended to (>>)
#   run_step NAME COMMAND...           COMMAND once: skipped when $OUT/.done/NAME
#                                      exists, logged to $OUT/logs/NAME.log
#   use_venv_python                    PYTHON=.venv/bin/python if unset and present
# Input checks (each exits with a message naming the variable to set; with
# DRY_RUN=1 each prints it as a warning and goes on):
#   require_dir DIR VAR [HINT]         DIR exists
#   require_checkpoint PATH VAR [HINT] PATH is a model_dir holding a checkpoint,
#                                      or a checkpoint prefix (PATH.index)
#   require_shards DIR PREFIX NUM_SHARDS VAR
#                                      DIR/PREFIX-%05d-of-%05d exist for all shards
#   require_records DIR PREFIX VAR HINT  DIR holds PREFIX-* files
#   require_stats DIR NUM_SHARDS HINT  filter pass-1 statistics of all shards
# Command lines:
#   words_of VAR...                    FLAG_WORDS: the variables' values, word-split
#                                      (a flag given twice stays twice: absl
#                                      keeps its last value)
# Worker pool for sharded jobs (predict, filter, reassign):
#   setup_workers any|cpu              reads GPUS / NUM_WORKERS (see below)
#   run_sharded NAME MODE NUM_SHARDS COMMAND...
#
# Environment read here (every variable of the scripts: docs/scripts.md):
#   PYTHON       interpreter [python]
#   DRY_RUN      1: print the Python command lines instead of running them
#                (sharded steps: one line per worker call, with its
#                CUDA_VISIBLE_DEVICES and --shard_id); missing inputs are
#                warnings; nothing is written [0]
#   GPUS         comma list of GPU ids, one worker per id, each pinned with
#                CUDA_VISIBLE_DEVICES=<id>, e.g. GPUS=0,1,2,3
#   NUM_WORKERS  number of CPU workers (CUDA_VISIBLE_DEVICES empty)
#                Neither set: one worker that sees every device, so a single
#                process may still use several GPUs through MirroredStrategy.
#   LOG_DIR      where run_sharded writes one log per worker (set by the
#                calling script)

# The project's virtualenv, when there is one and PYTHON is not set (the MNIST
# demo and its loop create and use it).
use_venv_python() {
  if [[ -z "${PYTHON:-}" && -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
  fi
}

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

[[ "${DRY_RUN:-0}" == 0 || "${DRY_RUN}" == 1 ]] || die "DRY_RUN=${DRY_RUN}: expected 0 or 1."

# A variable set under its old name would otherwise be ignored without a word,
# and the run would go on with other flags than the user meant.
for _renamed in TRAIN_FLAGS:EXTRA_TRAIN_FLAGS TEACHER_ARGS:EXTRA_TEACHER_FLAGS \
  STUDENT_ARGS:EXTRA_STUDENT_FLAGS PREPRO_ARGS:EXTRA_PREPRO_FLAGS DATA_ROOT_DIR:DATASET_DIR; do
  _old=${_renamed%%:*}
  [[ -z "${!_old+set}" ]] || die "${_old} was renamed ${_renamed#*:}."
done
unset _renamed _old

dry_run() {
  [[ "${DRY_RUN:-0}" == 1 ]]
}

# A missing input stops a run; a dry run only reports it, so that it can show
# every command of a pipeline whose earlier steps have not run yet.
missing_input() {
  if dry_run; then
    echo "$(basename "$0"): warning: $* (DRY_RUN: going on)" >&2
    return 0
  fi
  die "$@"
}

show_help_if_asked() {
  [[ "${1:-}" == -h || "${1:-}" == --help ]] || return 0
  # The scripts cd to the repository root first: a relative $0 is relative to
  # where they were started, which the cd left in OLDPWD.
  local script=$0
  if [[ "${script}" != /* && -f "${OLDPWD:-}/${script}" ]]; then
    script="${OLDPWD}/${script}"
  fi
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${script}"
  exit 0
}

# Scripts that run several steps take their flags from variables, one per
# step kind; an argument would otherwise be dropped without a word.
refuse_arguments() {
  [[ $# == 0 ]] || die "unexpected argument(s): $*. Flags go in EXTRA_FLAGS, EXTRA_TRAIN_FLAGS, EXTRA_TEACHER_FLAGS or EXTRA_STUDENT_FLAGS (docs/scripts.md)."
}

# One line a shell can run again: words quoted only where the shell needs it.
_print_command() {
  local word sep=""
  for word in "$@"; do
    if [[ "${word}" =~ ^[][A-Za-z0-9_@%+=:,./-]+$ ]]; then
      printf '%s%s' "${sep}" "${word}"
    else
      printf '%s%q' "${sep}" "${word}"
    fi
    sep=" "
  done
  echo
}

run_command() {
  if dry_run; then
    _print_command "$@"
    return 0
  fi
  run_child "$@"
}

# Bash defers its traps while a foreground command runs, and a SIGTERM that
# kills the script leaves that command running (holding, say, a training's
# lock). So the command runs in the background while the script waits for
# it, and a SIGTERM or SIGINT to the script is sent on as SIGTERM (a script's
# background jobs ignore SIGINT, and the scripts it starts cannot trap it).
# The script then waits for the child to finish (a training saves its
# checkpoint first) and returns its status.
run_child() {
  local child status=0
  "$@" &
  child=$!
  # shellcheck disable=SC2064  # the child's pid, now
  trap "CHILD_SIGNALLED=1; kill -TERM ${child} 2>/dev/null" TERM INT
  while :; do
    wait "${child}" && status=0 || status=$?
    kill -0 "${child}" 2>/dev/null || break
  done
  trap - TERM INT
  return "${status}"
}

# `>` follows a symlink planted where an output goes and overwrites its
# target; removing what is there first and creating the file with noclobber
# (O_EXCL) never writes through a link.
new_file() {
  rm -f -- "$1" || die "cannot replace $1."
  (set -o noclobber && : >"$1") || die "cannot create $1 (created by someone else meanwhile?)."
}

_now() {
  date +%s.%N
}

# run_step NAME COMMAND...: runs COMMAND unless $OUT/.done/NAME exists (it
# holds the step's seconds), logging to $OUT/logs/NAME.log; on failure shows
# the end of the log and stops; stopped by a signal, exits with the child's
# status so that a re-run resumes. A dry run shows the step's commands instead.
run_step() {
  local name=$1
  shift
  if dry_run; then
    echo "# ${name}"
    "$@"
    return 0
  fi
  local marker="${OUT}/.done/${name}" log="${OUT}/logs/${name}.log"
  if [[ -f "${marker}" ]]; then
    printf '  %-16s done earlier (%.0f s)\n' "${name}" "$(cat "${marker}")"
    return 0
  fi
  printf '  %-16s ... ' "${name}"
  local start
  start=$(_now)
  new_file "${log}"
  local status=0
  CHILD_SIGNALLED=0
  run_child "$@" >>"${log}" 2>&1 || status=$?
  if ((status)) && [[ "${CHILD_SIGNALLED}" == 1 ]]; then
    echo "STOPPED"
    tail -n 3 "${log}" >&2
    echo "$(basename "$0"): step ${name} stopped by a signal (log: ${log}); re-run to resume it." >&2
    exit "${status}"
  fi
  if ((status)); then
    echo "FAILED"
    echo "--- last lines of ${log}:" >&2
    tail -n 25 "${log}" >&2
    die "step ${name} failed (full log: ${log}). Fix the cause and re-run: finished steps are skipped."
  fi
  local seconds
  seconds=$(awk -v a="${start}" -v b="$(_now)" 'BEGIN { printf "%.1f", b - a }')
  new_file "${marker}"
  echo "${seconds}" >>"${marker}"
  printf '%6.0f s\n' "${seconds}"
}

# Paths such as gs://bucket/... cannot be checked from bash; Python checks
# them (and everything else) again anyway. These checks exist to fail in a
# second with a clear message instead of after loading TensorFlow.
_is_remote() {
  [[ "$1" == *://* ]]
}

require_dir() {
  local dir=$1 var=$2 hint=${3:-}
  _is_remote "${dir}" && return 0
  [[ -d "${dir}" ]] || missing_input "${var}: directory ${dir} does not exist.${hint:+ ${hint}}"
}

require_checkpoint() {
  local path=$1 var=$2 hint=${3:-}
  _is_remote "${path}" && return 0
  if [[ -d "${path}" ]]; then
    # A model_dir: tf.train.latest_checkpoint needs the `checkpoint` index file.
    [[ -f "${path}/checkpoint" ]] && compgen -G "${path}/*.index" >/dev/null && return 0
    missing_input "${var}=${path}: no checkpoint in this directory (expected the 'checkpoint' file" \
      "and ckpt-*.index files of a finished training run).${hint:+ ${hint}}"
  elif [[ ! -f "${path}.index" ]]; then
    missing_input "${var}=${path}: neither a model directory with a checkpoint nor a checkpoint" \
      "prefix (no ${path}.index).${hint:+ ${hint}}"
  fi
}

# Lists every missing input shard rather than letting each worker fail on
# its own, typically because NUM_SHARDS does not match the files.
require_shards() {
  local dir=$1 prefix=$2 num_shards=$3 var=$4
  _require_count NUM_SHARDS "${num_shards}"
  _is_remote "${dir}" && return 0
  [[ -d "${dir}" ]] || {
    missing_input "${var}: directory ${dir} does not exist."
    return 0
  }
  local missing=() shard
  for ((shard = 0; shard < num_shards; shard++)); do
    [[ -f "$(printf '%s/%s-%05d-of-%05d' "${dir}" "${prefix}" "${shard}" "${num_shards}")" ]] ||
      missing+=("${shard}")
  done
  if ((${#missing[@]})); then
    missing_input "${#missing[@]} of ${num_shards} input shards missing in ${var}=${dir}" \
      "($(printf '%s-%05d-of-%05d' "${prefix}" "${missing[0]}" "${num_shards}") ...;" \
      "shard ids $(_join , "${missing[@]:0:20}")$( ((${#missing[@]} > 20)) && echo ' ...')." \
      "Does NUM_SHARDS=${num_shards} match the input files?"
  fi
}

require_records() {
  local dir=$1 prefix=$2 var=$3 hint=$4
  _is_remote "${dir}" && return 0
  if [[ ! -d "${dir}" ]]; then
    missing_input "${var}: directory ${dir} does not exist. ${hint}"
  elif ! compgen -G "${dir}/${prefix}-*" >/dev/null; then
    missing_input "${var}=${dir} holds no ${prefix}-* records. ${hint}"
  fi
}

# Pass 2 of the filter needs pass 1's statistics of every shard (filter task
# 0, the only task these scripts run per shard).
require_stats() {
  local dir=$1 num_shards=$2 hint=$3
  _is_remote "${dir}" && return 0
  local missing=() shard
  for ((shard = 0; shard < num_shards; shard++)); do
    [[ -f "$(printf '%s/prelim_stats_%05d_0.json' "${dir}" "${shard}")" ]] || missing+=("${shard}")
  done
  if ((${#missing[@]})); then
    missing_input "pass-1 statistics missing for ${#missing[@]} of ${num_shards} shards in ${dir}:" \
      "shard ids $(_join , "${missing[@]:0:50}")$( ((${#missing[@]} > 50)) && echo ' ...'). ${hint}"
  fi
}

_require_count() {
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1=$2: expected a positive integer."
}

_join() {
  local IFS=$1
  shift
  echo "$*"
}

words_of() {
  FLAG_WORDS=()
  local var
  local -a part
  for var in "$@"; do
    read -ra part <<<"${!var:-}"
    FLAG_WORDS+=("${part[@]}")
  done
}

# WORKER_DEVICES: one entry per worker, the CUDA_VISIBLE_DEVICES value it gets,
# or "inherit" to leave the environment alone. With "cpu", the workers are
# counted the same way but never see a GPU (jobs that only read files, like
# filtering, would otherwise each grab GPU memory); "any" keeps the devices.
setup_workers() {
  local cpu_only=$1
  if [[ -n "${GPUS:-}" && -n "${NUM_WORKERS:-}" ]]; then
    die "set GPUS (one worker per GPU) or NUM_WORKERS (CPU workers), not both."
  fi
  WORKER_DEVICES=()
  if [[ -n "${GPUS:-}" ]]; then
    IFS=, read -ra WORKER_DEVICES <<<"${GPUS// /}"
    ((${#WORKER_DEVICES[@]})) || die "GPUS=${GPUS}: no GPU id."
  elif [[ -n "${NUM_WORKERS:-}" ]]; then
    _require_count NUM_WORKERS "${NUM_WORKERS}"
    local i
    for ((i = 0; i < NUM_WORKERS; i++)); do WORKER_DEVICES+=(""); done
  else
    WORKER_DEVICES=(inherit)
  fi
  if [[ "${cpu_only}" == cpu ]]; then
    local i
    for i in "${!WORKER_DEVICES[@]}"; do WORKER_DEVICES[i]=""; done
  fi
}

# The calls of one worker: its shard list once (MODE list) or one shard each.
_worker_calls() {
  local mode=$1 shards=$2
  _WORKER_CALLS=()
  if [[ "${mode}" == list ]]; then
    _WORKER_CALLS=("${shards}")
  else
    IFS=, read -ra _WORKER_CALLS <<<"${shards}"
  fi
}

# One background worker: runs its calls one after the other, records the
# shards of failed calls in $failed, and on TERM stops its current call.
_worker() {
  local device=$1 mode=$2 log=$3 failed=$4 shards=$5
  shift 5
  if [[ "${device}" != inherit ]]; then
    export CUDA_VISIBLE_DEVICES="${device}"
  fi
  local child=
  _worker_calls "${mode}" "${shards}"
  trap '[[ -n "${child}" ]] && kill "${child}" 2>/dev/null && wait "${child}"; exit 143' TERM
  new_file "${log}"
  local ids
  for ids in "${_WORKER_CALLS[@]}"; do
    echo "=== $(date '+%F %T') CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>} $* --shard_id=${ids}" >>"${log}"
    "$@" --shard_id="${ids}" >>"${log}" 2>&1 &
    child=$!
    if ! wait "${child}"; then
      tr , '\n' <<<"${ids}" >>"${failed}"
    fi
    child=
  done
  [[ ! -s "${failed}" ]]
}

# DRY_RUN: the command line of every call of every worker.
_print_worker_calls() {
  local mode=$1 w ids
  shift
  for w in "${!_WORKER_SHARDS[@]}"; do
    _worker_calls "${mode}" "${_WORKER_SHARDS[w]}"
    for ids in "${_WORKER_CALLS[@]}"; do
      case "${WORKER_DEVICES[w]}" in
        inherit) ;;
        "") printf "CUDA_VISIBLE_DEVICES='' " ;;
        *) printf 'CUDA_VISIBLE_DEVICES=%s ' "${WORKER_DEVICES[w]}" ;;
      esac
      _print_command "$@" --shard_id="${ids}"
    done
  done
}

# run_sharded NAME MODE NUM_SHARDS COMMAND...
#
# Runs COMMAND on shards 0..NUM_SHARDS-1 with the workers of setup_workers.
# Worker w of n takes shards w, w+n, w+2n, ..., so each shard is processed
# exactly once. MODE "list": one call per worker with --shard_id=w,w+n,...
# (the model loads once per worker); MODE "each": one call per shard with
# --shard_id=k. Waits for all workers; if any call failed, prints the failed
# shards and the end of the failed workers' logs and returns 1.
#
# If the caller defines a function shard_done (shard id -> status 0 when its
# output is complete), the shards of a failed "list" call are narrowed down
# to those whose output is missing.
run_sharded() {
  local name=$1 mode=$2 num_shards=$3
  shift 3
  [[ "${mode}" == list || "${mode}" == each ]] || die "run_sharded: MODE must be list or each."
  _require_count NUM_SHARDS "${num_shards}"
  [[ -n "${LOG_DIR:-}" ]] || die "run_sharded: LOG_DIR is not set."
  local num_workers=${#WORKER_DEVICES[@]} shards w s
  _WORKER_SHARDS=()
  for ((w = 0; w < num_workers && w < num_shards; w++)); do
    shards=()
    for ((s = w; s < num_shards; s += num_workers)); do shards+=("${s}"); done
    _WORKER_SHARDS+=("$(_join , "${shards[@]}")")
  done
  if dry_run; then
    _print_worker_calls "${mode}" "$@"
    return 0
  fi
  mkdir -p "${LOG_DIR}"
  local pids=() logs=() faileds=()
  for w in "${!_WORKER_SHARDS[@]}"; do
    local log="${LOG_DIR}/${name}-worker${w}.log" failed="${LOG_DIR}/${name}-worker${w}.failed"
    rm -f "${failed}"
    _worker "${WORKER_DEVICES[w]}" "${mode}" "${log}" "${failed}" "${_WORKER_SHARDS[w]}" "$@" &
    pids+=($!)
    logs+=("${log}")
    faileds+=("${failed}")
  done
  echo "${name}: ${#pids[@]} worker(s) on ${num_shards} shards; logs: ${LOG_DIR}/${name}-worker*.log"
  # Background jobs of a script ignore Ctrl-C, so pass it on to them.
  trap 'kill "${pids[@]}" 2>/dev/null; wait; exit 130' INT TERM
  local failed_workers=()
  for w in "${!pids[@]}"; do
    wait "${pids[w]}" || failed_workers+=("${w}")
  done
  trap - INT TERM
  ((${#failed_workers[@]})) || {
    echo "${name}: all ${num_shards} shards done."
    return 0
  }

  local attempted=() failed_shards=()
  for w in "${failed_workers[@]}"; do
    if [[ -s "${faileds[w]}" ]]; then
      mapfile -t -O "${#attempted[@]}" attempted <"${faileds[w]}"
    else # The worker itself died: all its shards are suspect.
      IFS=, read -ra shards <<<"${_WORKER_SHARDS[w]}"
      attempted+=("${shards[@]}")
    fi
  done
  for s in "${attempted[@]}"; do
    if [[ "${mode}" == list ]] && declare -F shard_done >/dev/null && shard_done "${s}"; then
      continue
    fi
    failed_shards+=("${s}")
  done
  # Nothing left after narrowing (say the worker crashed on exit): name them all.
  ((${#failed_shards[@]})) || failed_shards=("${attempted[@]}")
  mapfile -t failed_shards < <(printf '%s\n' "${failed_shards[@]}" | sort -n)
  for w in "${failed_workers[@]}"; do
    echo "--- end of ${logs[w]}:" >&2
    tail -n 15 "${logs[w]}" >&2
  done
  echo "$(basename "$0"): error: ${name} failed for ${#failed_shards[@]} of ${num_shards} shards:" \
    "shard ids $(_join , "${failed_shards[@]}") (${#failed_workers[@]} of ${#pids[@]} workers" \
    "failed; see the logs above and in ${LOG_DIR})." >&2
  return 1
}
