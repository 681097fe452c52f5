#!/bin/bash
# ImageNet noisy student trained from stored pseudo labels: the filtered,
# balanced records of filter_unlabel.sh 0 (or of reassign.sh), with their
# probabilities at temperature 1; no teacher runs during training. Same
# per-model flags and base command as train.sh (defaults.sh).
# Evaluate with MODEL_DIR=ckpt/imagenet_offline bash local_scripts/imagenet/eval.sh
#
#   MODEL=efficientnet-b0 bash local_scripts/imagenet/run_offline.sh [flags...]
#   DRY_RUN=1 bash local_scripts/imagenet/run_offline.sh   # print the command
#
# Environment (defaults in brackets; settings in defaults.sh):
#   MODEL          student: efficientnet-b0 ... efficientnet-b7 [efficientnet-b0]
#   DATA_DIR       labeled records [data/imagenet/proc]
#   DATA_ROOT      prediction root of predict.sh [data/imagenet/predict]
#   UNLABEL_DIR    filtered records [$DATA_ROOT/filter_data/data]
#   MODEL_DIR      student checkpoints [ckpt/imagenet_offline] (not train.sh's
#                  ckpt/imagenet, whose run would be resumed); delete it to
#                  start over
#   MODEL_FLAGS    architecture [--model_name=$MODEL]
#   STUDENT_FLAGS  training flags [the published ones of MODEL]
#   RUN_FLAGS      loop and checkpoint flags [main.py's defaults]
#   EXTRA_FLAGS, EXTRA_TRAIN_FLAGS, EXTRA_STUDENT_FLAGS
#                  your flags, in this order after the settings above
#                  (docs/scripts.md)
#   PYTHON, DRY_RUN   see local_scripts/common.sh
# Arguments are appended, e.g. --use_tpu=True --tpu=NAME --use_bfloat16=True;
# a flag given twice keeps its last value.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/imagenet/defaults.sh
source local_scripts/steps/train.sh offline "$@"
