# shellcheck shell=bash disable=SC2034  # the sourcing scripts use these
# ImageNet: every setting of the scripts of this folder, with the published
# values (docs/method.md, "Published settings"). Sourced by each of them
# before its step script (local_scripts/steps/); never run. Each
# X="${X:-...}" can be overridden from the environment;
# local_scripts/steps/settings.sh adds the settings every task derives the
# same way (file prefix, log folder, ...). Data layout: docs/imagenet.md.

TASK_NAME=imagenet
TASK_SCRIPTS=local_scripts/imagenet
NUM_CLASSES=1000
DATA_DIR="${DATA_DIR:-data/imagenet/proc}"
DATA_HINT="See docs/imagenet.md for the expected layout."

# The MODEL_DIR of each training script. The teacher is trained outside
# these scripts (a supervised main.py run: a model_dir with model_params.txt).
TEACHER_DIR=ckpt/imagenet_teacher
TEACHER_HINT="Point TEACHER_CKPT at the teacher's checkpoint."
STUDENT_DIR=ckpt/imagenet
# Not train.sh's: that run would be resumed.
OFFLINE_STUDENT_DIR=ckpt/imagenet_offline
REASSIGN_CKPT="${REASSIGN_CKPT:-${STUDENT_DIR}}"

# The student: MODEL picks its published flags, added to the published base
# command (batch 4096, 109,474 steps times train_ratio, soft pseudo labels at
# temperature 1).
MODEL="${MODEL:-efficientnet-b0}"
MODEL_FLAGS="${MODEL_FLAGS:---model_name=${MODEL}}"
declare -A PUBLISHED_STUDENT_FLAGS=(
  [efficientnet-b0]="--unlabel_ratio=1 --train_ratio=2"
  [efficientnet-b1]="--unlabel_ratio=3 --train_ratio=2"
  [efficientnet-b2]="--unlabel_ratio=3 --train_ratio=2 --augment_name=v1 --randaug_mag=6"
  [efficientnet-b3]="--unlabel_ratio=3 --train_ratio=2 --augment_name=v1 --randaug_mag=12"
  [efficientnet-b4]="--unlabel_ratio=3 --train_ratio=2 --augment_name=v1 --randaug_mag=15"
  [efficientnet-b5]="--unlabel_ratio=3 --augment_name=v1 --randaug_mag=18"
  [efficientnet-b6]="--unlabel_ratio=3 --augment_name=v1 --randaug_mag=24"
  [efficientnet-b7]="--unlabel_ratio=3 --augment_name=v1 --randaug_mag=27"
)
if [[ -n "${PUBLISHED_STUDENT_FLAGS[${MODEL}]+set}" ]]; then
  STUDENT_FLAGS="${STUDENT_FLAGS:---teacher_softmax_temp=1 ${PUBLISHED_STUDENT_FLAGS[${MODEL}]}}"
else
  # Only the training scripts need them; they stop with this message.
  NO_STUDENT_FLAGS="MODEL=${MODEL}: no published student settings; expected one of"
  NO_STUDENT_FLAGS+=" $(printf '%s\n' "${!PUBLISHED_STUDENT_FLAGS[@]}" | sort | paste -sd ' ')."
  NO_STUDENT_FLAGS+=" Or set STUDENT_FLAGS."
fi
RUN_FLAGS="${RUN_FLAGS:-}"
EVAL_AFTER_TRAINING=0

# Pseudo labels: predict.sh, filter_unlabel.sh and reassign.sh write below
# DATA_ROOT; the filter keeps NUM_IMAGE images per class (as published),
# none below confidence MIN_THRESHOLD (as published).
DATA_ROOT="${DATA_ROOT:-data/imagenet/predict}"
NUM_SHARDS="${NUM_SHARDS:-128}"
BATCH_SIZE="${BATCH_SIZE:-64}"
NUM_IMAGE="${NUM_IMAGE:-130000}"
MIN_THRESHOLD="${MIN_THRESHOLD:-0.3}"
FILTER_WORKERS=1
