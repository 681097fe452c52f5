# shellcheck shell=bash
# Helpers shared by the driver scripts under local_scripts/<task>/. Sourced,
# never run:   source "local_scripts/common.sh"
#
# Input checks (each exits with a message naming the variable to set):
#   require_dir DIR VAR [HINT]         DIR exists
#   require_checkpoint PATH VAR [HINT] PATH is a model_dir holding a checkpoint,
#                                      or a checkpoint prefix (PATH.index)
#   require_shards DIR PREFIX NUM_SHARDS VAR
#                                      DIR/PREFIX-%05d-of-%05d exist for all shards
#   require_stats DIR NUM_SHARDS HINT  filter pass-1 statistics of all shards
# Worker pool for sharded jobs (predict, filter, reassign):
#   setup_workers any|cpu              reads GPUS / NUM_WORKERS (see below)
#   run_sharded NAME MODE NUM_SHARDS COMMAND...
#
# Environment read here:
#   PYTHON       interpreter [python]
#   EXTRA_FLAGS  extra flags appended to every Python call (word-split), e.g.
#                "--train_steps=1000 --use_bfloat16=True". Command-line
#                arguments of the scripts are appended after them; the last
#                value of a repeated flag wins.
#   GPUS         comma list of GPU ids, one worker per id, each pinned with
#                CUDA_VISIBLE_DEVICES=<id>, e.g. GPUS=0,1,2,3
#   NUM_WORKERS  number of CPU workers (CUDA_VISIBLE_DEVICES empty)
#                Neither set: one worker that sees every device, so a single
#                process may still use several GPUs through MirroredStrategy.
#   LOG_DIR      where run_sharded writes one log per worker (set by the
#                calling script)

PYTHON="${PYTHON:-python}"

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
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
  [[ -d "${dir}" ]] || die "${var}: directory ${dir} does not exist.${hint:+ ${hint}}"
}

require_checkpoint() {
  local path=$1 var=$2 hint=${3:-}
  _is_remote "${path}" && return 0
  if [[ -d "${path}" ]]; then
    # A model_dir: tf.train.latest_checkpoint needs the `checkpoint` index file.
    if [[ -f "${path}/checkpoint" ]] && compgen -G "${path}/*.index" >/dev/null; then
      return 0
    fi
    die "${var}=${path}: no checkpoint in this directory (expected the 'checkpoint' file" \
      "and ckpt-*.index files of a finished training run).${hint:+ ${hint}}"
  fi
  [[ -f "${path}.index" ]] && return 0
  die "${var}=${path}: neither a model directory with a checkpoint nor a checkpoint" \
    "prefix (no ${path}.index).${hint:+ ${hint}}"
}

# Lists every missing input shard rather than letting each worker fail on
# its own, typically because NUM_SHARDS does not match the files.
require_shards() {
  local dir=$1 prefix=$2 num_shards=$3 var=$4
  _require_count NUM_SHARDS "${num_shards}"
  _is_remote "${dir}" && return 0
  require_dir "${dir}" "${var}"
  local missing=() shard
  for ((shard = 0; shard < num_shards; shard++)); do
    [[ -f "$(printf '%s/%s-%05d-of-%05d' "${dir}" "${prefix}" "${shard}" "${num_shards}")" ]] ||
      missing+=("${shard}")
  done
  if ((${#missing[@]})); then
    die "${#missing[@]} of ${num_shards} input shards missing in ${var}=${dir}" \
      "($(printf '%s-%05d-of-%05d' "${prefix}" "${missing[0]}" "${num_shards}") ...;" \
      "shard ids $(_join , "${missing[@]:0:20}")$( ((${#missing[@]} > 20)) && echo ' ...')." \
      "Does NUM_SHARDS=${num_shards} match the input files?"
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
    die "pass-1 statistics missing for ${#missing[@]} of ${num_shards} shards in ${dir}:" \
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

# EXTRA: the EXTRA_FLAGS words followed by the given arguments.
collect_extra_flags() {
  read -ra EXTRA <<<"${EXTRA_FLAGS:-}"
  EXTRA+=("$@")
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

# One background worker: runs its calls one after the other, records the
# shards of failed calls in $failed, and on TERM stops its current call.
_worker() {
  local device=$1 mode=$2 log=$3 failed=$4 shards=$5
  shift 5
  if [[ "${device}" != inherit ]]; then
    export CUDA_VISIBLE_DEVICES="${device}"
  fi
  local calls=() child=
  if [[ "${mode}" == list ]]; then
    calls=("${shards}")
  else
    IFS=, read -ra calls <<<"${shards}"
  fi
  trap '[[ -n "${child}" ]] && kill "${child}" 2>/dev/null; exit 143' TERM
  : >"${log}"
  local ids
  for ids in "${calls[@]}"; do
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
  mkdir -p "${LOG_DIR}"
  local num_workers=${#WORKER_DEVICES[@]}
  local pids=() logs=() faileds=() worker_shards=() shards w s
  for ((w = 0; w < num_workers && w < num_shards; w++)); do
    shards=()
    for ((s = w; s < num_shards; s += num_workers)); do shards+=("${s}"); done
    local log="${LOG_DIR}/${name}-worker${w}.log" failed="${LOG_DIR}/${name}-worker${w}.failed"
    rm -f "${failed}"
    worker_shards+=("$(_join , "${shards[@]}")")
    _worker "${WORKER_DEVICES[w]}" "${mode}" "${log}" "${failed}" "${worker_shards[w]}" "$@" &
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
      IFS=, read -ra shards <<<"${worker_shards[w]}"
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
