#!/bin/bash
# The Noisy Student loop on MNIST: local_scripts/loop.sh with TASK_NAME=mnist
# (its --help has the steps, outputs and variables). An explicit TASK_NAME
# still wins, as it did when the loop lived here.
set -euo pipefail
cd "$(dirname "$0")/../.."
TASK_NAME="${TASK_NAME:-mnist}" exec bash local_scripts/loop.sh "$@"
