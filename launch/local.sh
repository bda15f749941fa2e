#!/usr/bin/env bash
# One process on this machine, using all of its devices: the CPU, every visible GPU, or the chips of
# a single TPU VM host. Batches are split over the devices (config.mesh.*); nothing else changes.
#
# Usage:
#   launch/local.sh CONFIG WORKDIR [COLORGAN FLAGS...]
#   launch/local.sh configs/quickstart.py workdirs/quickstart
#   launch/local.sh configs/default.py workdirs/default --config.batch_size=64 \
#       --config.compute_dtype=bfloat16
#   CUDA_VISIBLE_DEVICES=0,1 launch/local.sh configs/default.py workdirs/two_gpus
#   CPU_DEVICES=8 launch/local.sh configs/quickstart.py workdirs/q8   # 8 CPU devices, to try it out
#
# Environment: CPU_DEVICES (split the CPU into N JAX devices and use the CPU only), PYTHON (default:
# .venv/bin/python if present, else python3), JAX_COMPILATION_CACHE_DIR (default WORKDIR/jax_cache;
# set it empty to compile afresh). Rerunning with the same WORKDIR resumes, and reuses the compiled
# programs of the last run: the train step compiles once, not at every restart.
set -euo pipefail

if (($# < 2)); then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
config="$1" workdir="$2"
shift 2
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # colorgan importable from any directory
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
if [[ -n "${CPU_DEVICES:-}" ]]; then
  export JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES="$CPU_DEVICES"
fi
# In WORKDIR, not shared: XLA:CPU programs are built for this machine's CPU.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR-$workdir/jax_cache}"
# One process: never join a distributed run, even inside a SLURM or MPI allocation.
exec "$PYTHON" -m colorgan.main --config="$config" --workdir="$workdir" --distributed=off "$@"
