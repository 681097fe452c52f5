#!/bin/bash
# The published name of local_scripts/svhn/run_offline.sh (the noisy student
# trained from the stored, filtered pseudo labels). Kept so that old commands
# keep working: arguments and environment pass through unchanged; see
# run_offline.sh for both.
set -euo pipefail
exec bash "$(dirname "$0")/run_offline.sh" "$@"
