#!/bin/bash
# Launches one main.py --mode=train worker of a multi-worker run (MultiWorkerMirroredStrategy).
#
# Run it once on every host, with the same WORKERS list and the host's own
# INDEX (0 is the chief: it alone writes checkpoints and summaries in
# MODEL_DIR, which must be a folder every host can reach, e.g. gs:// or NFS):
#
#   host A: WORKERS=hostA:12345,hostB:12345 INDEX=0 local_scripts/multiworker.sh --model_dir=... ...
#   host B: WORKERS=hostA:12345,hostB:12345 INDEX=1 local_scripts/multiworker.sh --model_dir=... ...
#
# Every other argument goes to main.py; --train_batch_size is the global batch
# (docs/scale.md). tests/test_multiworker.py runs two such workers on 127.0.0.1.
set -euo pipefail
: "${WORKERS:?set WORKERS=host:port,host:port,... (the same list on every host)}"
: "${INDEX:?set INDEX to the position of this host in WORKERS (0 = chief)}"
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
IFS=, read -r -a hosts <<<"${WORKERS}"
quoted=$(printf '"%s",' "${hosts[@]}")
# shellcheck disable=SC2089,SC2090  # the quotes are JSON, meant literally
export TF_CONFIG="{\"cluster\": {\"worker\": [${quoted%,}]}, \"task\": {\"type\": \"worker\", \"index\": ${INDEX}}}"
exec "${PYTHON}" main.py --mode=train --use_tpu=False "$@"
