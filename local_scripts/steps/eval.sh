# shellcheck shell=bash
# Step: top-1/top-5 accuracy of the latest checkpoint (EMA weights) of
# MODEL_DIR on the task's eval subsets (main.py --mode=eval; the results also
# go to $MODEL_DIR/eval_results.json). Sourced by local_scripts/<task>/eval.sh
# after the task's defaults.sh:
#
#   source local_scripts/steps/eval.sh [flags...]
#
# Variables (the task's defaults.sh sets those shown without a default):
#   TASK_NAME, DATA_DIR   the task and its labeled data
#   MODEL_DIR             checkpoints to evaluate [$STUDENT_DIR]
#   MODEL_FLAGS           architecture, used if MODEL_DIR has no model_params.txt
#   RUN_FLAGS             eval flags
#   BATCH_SIZE            images per eval batch
#   EXTRA_FLAGS, EXTRA_TRAIN_FLAGS   the user's flags (word-split), as in
#                         steps/train.sh; the step's arguments come last
#   DATA_HINT, TASK_SCRIPTS    for the messages
#   PYTHON, DRY_RUN       see local_scripts/common.sh
source local_scripts/steps/settings.sh

show_help_if_asked "$@"
MODEL_DIR="${MODEL_DIR:-${STUDENT_DIR}}"
require_dir "${DATA_DIR}" DATA_DIR "${DATA_HINT}"
require_checkpoint "${MODEL_DIR}" MODEL_DIR "Train with train.sh or run_offline.sh first."

words_of EXTRA_FLAGS EXTRA_TRAIN_FLAGS
eval_command --eval_batch_size="${BATCH_SIZE}" "${FLAG_WORDS[@]}" "$@"
run_command "${PY_COMMAND[@]}"
