# shellcheck shell=bash
# Step: trains a model (main.py --mode=train), then evaluates its latest
# checkpoint on the task's eval subsets (main.py --mode=eval) when
# EVAL_AFTER_TRAINING=1, or trains and evaluates in one process
# (main.py --mode=train_and_eval) when EVAL_AFTER_TRAINING=in_process.
# Sourced by the training scripts of
# local_scripts/<task>/ after the task's defaults.sh:
#
#   source local_scripts/steps/train.sh teacher|student|offline [flags...]
#
#   teacher  supervised, on the labeled images only (TEACHER_FLAGS,
#            EXTRA_TEACHER_FLAGS)
#   student  noisy student; the teacher TEACHER_CKPT predicts on the fly on
#            the raw unlabeled images UNLABEL_DIR (STUDENT_FLAGS,
#            EXTRA_STUDENT_FLAGS)
#   offline  noisy student from the stored, filtered pseudo labels in
#            UNLABEL_DIR; no teacher runs (STUDENT_FLAGS, EXTRA_STUDENT_FLAGS)
#
# The command: main.py --mode=train (or train_and_eval) MODEL_FLAGS RUN_FLAGS
# TEACHER_FLAGS|STUDENT_FLAGS, the data and model_dir flags, EXTRA_FLAGS
# EXTRA_TRAIN_FLAGS EXTRA_TEACHER_FLAGS|EXTRA_STUDENT_FLAGS, the arguments.
#
# Variables (the task's defaults.sh sets those shown without a default):
#   TASK_NAME, DATA_DIR   the task and its labeled data
#   MODEL_DIR             checkpoints; an existing run there is resumed
#                         [teacher: $TEACHER_DIR, student: $STUDENT_DIR,
#                         offline: $OFFLINE_STUDENT_DIR]
#   UNLABEL_DIR           student: raw unlabeled records [$RAW_UNLABEL_DIR =
#                         $DATA_DIR/unlabeled]; offline: filtered records
#                         [$FILTERED_DIR = $DATA_ROOT/filter_data/data]
#   TEACHER_CKPT          student: teacher model_dir or checkpoint prefix
#                         [$TEACHER_DIR]
#   TEACHER_MODEL         student: teacher architecture, checked against the
#                         checkpoint's model_params.txt [efficientnet-b0]
#   MODEL_FLAGS           architecture flags of both calls
#   RUN_FLAGS             loop, checkpoint, logging and eval flags of both calls
#   TEACHER_FLAGS         teacher: its training flags (setting it replaces them)
#   STUDENT_FLAGS         student, offline: their training flags (setting it
#                         replaces them); when empty the step stops with
#                         NO_STUDENT_FLAGS, the task's reason (ImageNet:
#                         MODEL has no published flags)
#   EVAL_AFTER_TRAINING   1: evaluate after training, in a second main.py
#                         call; in_process: in the training process
#                         (--mode=train_and_eval: every --steps_per_eval steps
#                         and at the end; saves a process start and a
#                         checkpoint restore); 0: print how to
#   EXTRA_FLAGS           the user's flags of every main.py call
#   EXTRA_TRAIN_FLAGS     the user's flags of the training and evaluation
#                         calls, teacher and students
#   EXTRA_TEACHER_FLAGS   teacher: the user's flags of its calls
#   EXTRA_STUDENT_FLAGS   student, offline: the user's flags of their calls
#                         The EXTRA_* flags (word-split) follow the defaults
#                         in this order, the step's arguments last; a flag
#                         given twice keeps its last value (docs/scripts.md).
#   DATA_HINT, TEACHER_HINT, TASK_SCRIPTS   for the messages
#   PYTHON, DRY_RUN       see local_scripts/common.sh
source local_scripts/steps/settings.sh

train_role=$1
shift
show_help_if_asked "$@"
[[ "${train_role}" == teacher ]] || [[ -n "${STUDENT_FLAGS:-}" ]] ||
  die "${NO_STUDENT_FLAGS:-STUDENT_FLAGS is empty.}"
require_dir "${DATA_DIR}" DATA_DIR "${DATA_HINT}"
case "${train_role}" in
  teacher)
    MODEL_DIR="${MODEL_DIR:-${TEACHER_DIR}}"
    role_flags=TEACHER_FLAGS
    extra_role_flags=EXTRA_TEACHER_FLAGS
    unlabeled_flags=()
    ;;
  student)
    MODEL_DIR="${MODEL_DIR:-${STUDENT_DIR}}"
    UNLABEL_DIR="${UNLABEL_DIR:-${RAW_UNLABEL_DIR}}"
    require_dir "${UNLABEL_DIR}" UNLABEL_DIR
    # Without a teacher the student would learn from meaningless targets (the
    # published scripts then reached 9% accuracy without any error): stop here.
    require_checkpoint "${TEACHER_CKPT}" TEACHER_CKPT "${TEACHER_HINT}"
    role_flags=STUDENT_FLAGS
    extra_role_flags=EXTRA_STUDENT_FLAGS
    unlabeled_flags=(--unlabel_data_dir="${UNLABEL_DIR}" --teacher_model_path="${TEACHER_CKPT}")
    if [[ -n "${TEACHER_MODEL}" ]]; then unlabeled_flags+=(--teacher_model_name="${TEACHER_MODEL}"); fi
    ;;
  offline)
    MODEL_DIR="${MODEL_DIR:-${OFFLINE_STUDENT_DIR}}"
    UNLABEL_DIR="${UNLABEL_DIR:-${FILTERED_DIR}}"
    require_records "${UNLABEL_DIR}" train UNLABEL_DIR \
      "Run ${TASK_SCRIPTS}/predict.sh, filter_unlabel.sh 1 and filter_unlabel.sh 0 first."
    role_flags=STUDENT_FLAGS
    extra_role_flags=EXTRA_STUDENT_FLAGS
    unlabeled_flags=(--unlabel_data_dir="${UNLABEL_DIR}")
    ;;
  *) die "steps/train.sh: role ${train_role}: expected teacher, student or offline." ;;
esac

# The role's extras come after EXTRA_TRAIN_FLAGS so that, like the arguments
# after them, the more specific setting wins.
words_of EXTRA_FLAGS EXTRA_TRAIN_FLAGS "${extra_role_flags}"
user_flags=("${FLAG_WORDS[@]}" "$@")
words_of MODEL_FLAGS RUN_FLAGS "${role_flags}"
train_mode=train
if [[ "${EVAL_AFTER_TRAINING}" == in_process ]]; then train_mode=train_and_eval; fi
main_py_command --mode="${train_mode}" "${FLAG_WORDS[@]}" --label_data_dir="${DATA_DIR}" \
  "${unlabeled_flags[@]}" --model_dir="${MODEL_DIR}" "${user_flags[@]}"
run_command "${PY_COMMAND[@]}"
if [[ "${EVAL_AFTER_TRAINING}" == 1 ]]; then
  eval_command "${user_flags[@]}"
  run_command "${PY_COMMAND[@]}"
elif [[ "${EVAL_AFTER_TRAINING}" != in_process ]]; then
  echo "Evaluate with: MODEL_DIR=${MODEL_DIR} bash ${TASK_SCRIPTS}/eval.sh"
fi
