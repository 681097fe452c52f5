#!/bin/bash
# Top-1/top-5 accuracy of the latest checkpoint (EMA weights) of MODEL_DIR on
# the ImageNet validation set; results also go to $MODEL_DIR/eval_results.json.
#
#   MODEL_DIR=ckpt/imagenet bash local_scripts/imagenet/eval.sh [flags...]
#   DRY_RUN=1 bash local_scripts/imagenet/eval.sh   # print the command
#
# Environment (defaults in brackets; settings in defaults.sh):
#   MODEL_DIR    checkpoints to evaluate [ckpt/imagenet]
#   MODEL        architecture, used if MODEL_DIR has no model_params.txt
#                [efficientnet-b0]
#   MODEL_FLAGS  architecture flags [--model_name=$MODEL]
#   DATA_DIR     labeled records with validation-* files [data/imagenet/proc]
#   BATCH_SIZE   images per eval batch [64]
#   EXTRA_FLAGS, EXTRA_TRAIN_FLAGS  your flags, in this order after the
#                settings above (docs/scripts.md)
#   PYTHON, DRY_RUN   see local_scripts/common.sh
# Arguments are appended to the Python call; a flag given twice keeps its
# last value.
# Relative paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source local_scripts/imagenet/defaults.sh
source local_scripts/steps/eval.sh "$@"
