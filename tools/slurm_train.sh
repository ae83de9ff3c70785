#!/usr/bin/env bash
# Training on a Slurm cluster: one task per GPU, MMEngine's slurm launcher.
# Usage: GPUS=16 tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py args]
# Environment: GPUS (total, default 8), GPUS_PER_NODE (default 8),
# CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun arguments).
set -euo pipefail
partition=$1; job_name=$2; config=$3; shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python}
[ -x "$here/../.venv/bin/python" ] && python=${PYTHON:-$here/../.venv/bin/python}
gpus=${GPUS:-8}
gpus_per_node=${GPUS_PER_NODE:-8}
srun -p "$partition" --job-name="$job_name" \
  --gres=gpu:"$gpus_per_node" --ntasks="$gpus" \
  --ntasks-per-node="$gpus_per_node" --cpus-per-task="${CPUS_PER_TASK:-5}" \
  --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "$python" -u "$here/train.py" "$config" --launcher slurm "$@"
