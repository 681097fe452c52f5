# shellcheck shell=bash
# The published per-model flags of the ImageNet noisy students (SPEC §9),
# added to the base command by train.sh and run_offline.sh. Sourced.
#
# set_student_flags MODEL: sets the array MODEL_FLAGS to the flags of MODEL,
# or exits with the list of known models.

declare -A STUDENT_FLAGS=(
  [efficientnet-b0]="--unlabel_ratio=1 --train_ratio=2"
  [efficientnet-b1]="--unlabel_ratio=3 --train_ratio=2"
  [efficientnet-b2]="--unlabel_ratio=3 --train_ratio=2 --augment_name=v1 --randaug_mag=6"
  [efficientnet-b3]="--unlabel_ratio=3 --train_ratio=2 --augment_name=v1 --randaug_mag=12"
  [efficientnet-b4]="--unlabel_ratio=3 --train_ratio=2 --augment_name=v1 --randaug_mag=15"
  [efficientnet-b5]="--unlabel_ratio=3 --augment_name=v1 --randaug_mag=18"
  [efficientnet-b6]="--unlabel_ratio=3 --augment_name=v1 --randaug_mag=24"
  [efficientnet-b7]="--unlabel_ratio=3 --augment_name=v1 --randaug_mag=27"
)

set_student_flags() {
  local model=$1 known
  if [[ -z "${STUDENT_FLAGS[${model}]+set}" ]]; then
    mapfile -t known < <(printf '%s\n' "${!STUDENT_FLAGS[@]}" | sort)
    die "MODEL=${model}: no published student settings; expected one of ${known[*]}."
  fi
  # shellcheck disable=SC2034  # used by the sourcing script
  read -ra MODEL_FLAGS <<<"${STUDENT_FLAGS[${model}]}"
}
