#!/usr/bin/env bash
# Distributed evaluation through torchrun.
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR and PORT as for torchrun.
set -euo pipefail
config=$1; checkpoint=$2; gpus=$3; shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python}
[ -x "$here/../.venv/bin/python" ] && python=${PYTHON:-$here/../.venv/bin/python}
exec "$python" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$gpus" \
  "$here/test.py" "$config" "$checkpoint" --launcher pytorch "$@"
