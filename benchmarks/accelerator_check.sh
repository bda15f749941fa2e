#!/usr/bin/env bash
# One-shot accelerator check (benchmarks/accelerator_check.py): the environment, the train step,
# generator inference, colorize and the input pipeline on this machine's first device, in < 8 min.
#
#   bash benchmarks/accelerator_check.sh            # on a GPU or TPU machine
#   bash benchmarks/accelerator_check.sh --quick    # the same code on a CPU, about a minute
#
# The log and the JSON (rewritten after every measurement, so a run cut short keeps its figures)
# go to $ACCEL_CHECK_DIR (default: $OUT where that is set, else /tmp/accelerator_check). The
# Python is $PYTHON, else .venv/bin/python, else python3. No measurement starts after --budget_s
# (390 s); after ACCEL_CHECK_TIMEOUT seconds (450) the check is interrupted (SIGINT; killed 25 s
# later): it prints what it has measured and exits with status 124.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${ACCEL_CHECK_DIR:-${OUT:-/tmp/accelerator_check}}"
mkdir -p "$dir"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONUNBUFFERED=1
# A rerun on the same machine skips most compiling (its compile_s are then cache hits, as the JSON's
# environment.compilation_cache says); set it empty to opt out.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR-/tmp/colorgan_jax_cache}"
status=0
timeout --signal=INT --kill-after=25 "${ACCEL_CHECK_TIMEOUT:-450}" \
  "$python" benchmarks/accelerator_check.py --output="$dir/accelerator_check.json" "$@" \
  2>&1 | tee "$dir/accelerator_check.log" || status=$?
echo "accelerator_check: log and JSON in $dir" >&2
exit "$status"
