#!/bin/bash
# The Noisy Student loop on SVHN with the published settings:
# local_scripts/loop.sh with TASK_NAME=svhn (its --help has the steps,
# outputs and variables). Needs prepro.sh's data, and a GPU or TPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
TASK_NAME=svhn exec bash local_scripts/loop.sh "$@"
