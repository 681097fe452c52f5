#!/bin/bash
# The published name of local_scripts/imagenet/run_offline.sh (the ImageNet
# noisy student trained from the stored, filtered pseudo labels). Kept so
# that old commands keep working: arguments and environment pass through
# unchanged; see run_offline.sh for both.
set -euo pipefail
exec bash "$(dirname "$0")/run_offline.sh" "$@"
