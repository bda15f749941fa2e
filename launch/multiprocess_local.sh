#!/usr/bin/env bash
# N colorgan processes on this machine, joined over loopback by jax.distributed: the code path of a
# multi-host cluster (a coordinator, process ids, per-process input rows, collectives between
# processes, one shared checkpoint) without a cluster.
#
# Usage:
#   launch/multiprocess_local.sh [COLORGAN FLAGS...]
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=2 launch/multiprocess_local.sh \
#       --config=configs/quickstart.py --workdir=workdirs/mp --config.total_steps=20
#
# Every process gets the same flags plus --coordinator_address=127.0.0.1:PORT --num_processes=N
# --process_id=I. Environment:
#   NUM_PROCESSES        processes to start (default 2)
#   DEVICES_PER_PROCESS  CPU devices per process, via JAX_NUM_CPU_DEVICES (default 1)
#   PORT                 coordinator port (default: a free one)
#   PYTHON               interpreter (default: the repo's .venv/bin/python if present, else python3)
#   JAX_PLATFORMS        default cpu: processes sharing one machine must not all claim its GPUs
# Output lines are prefixed with [process I]. If one process fails, the others are killed and the
# script exits with the failing status. Ctrl-C (or a SIGTERM to this script) is passed on to every
# process as a SIGTERM; what has not ended 10 s (30 s) later is killed.
set -euo pipefail

NUM_PROCESSES="${NUM_PROCESSES:-2}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-1}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # colorgan importable from any directory
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
if ! [[ "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ && "$DEVICES_PER_PROCESS" =~ ^[1-9][0-9]*$ ]]; then
  echo "multiprocess_local.sh: NUM_PROCESSES and DEVICES_PER_PROCESS must be positive integers" >&2
  exit 2
fi
PORT="${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export JAX_NUM_CPU_DEVICES="$DEVICES_PER_PROCESS"

echo "multiprocess_local.sh: $NUM_PROCESSES processes x $DEVICES_PER_PROCESS device(s), coordinator 127.0.0.1:$PORT" >&2
pids=()
alive() {
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}
# stop_all SIGNAL GRACE_S: send SIGNAL, give the processes GRACE_S seconds to end (under
# jax.distributed a SIGTERM is a preemption notice, not an exit), then SIGKILL what is left.
stop_all() {
  for pid in "${pids[@]}"; do kill -s "$1" "$pid" 2>/dev/null || true; done
  for ((t = 0; t < $2 * 2; t++)); do alive || return 0; sleep 0.5; done
  for pid in "${pids[@]}"; do kill -s KILL "$pid" 2>/dev/null || true; done
}
# Background processes of a script ignore SIGINT: Ctrl-C reaches them as a SIGTERM from here.
trap 'stop_all TERM 10; exit 130' INT
trap 'stop_all TERM 30; exit 143' TERM
for ((i = 0; i < NUM_PROCESSES; i++)); do
  # Each process's output, line by line with its index (sed -u: unbuffered, lines stay whole).
  "$PYTHON" -m colorgan.main "$@" --coordinator_address="127.0.0.1:$PORT" \
      --num_processes="$NUM_PROCESSES" --process_id="$i" \
      > >(sed -u "s/^/[process $i] /") 2> >(sed -u "s/^/[process $i] /" >&2) &
  pids+=($!)
done

# Poll rather than `wait -n` (bash >= 5.1 only).
status=0
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
    else
      wait "$pid" && code=0 || code=$?
      ((code == 0)) || status=$code
    fi
  done
  if ((status != 0)); then
    # The others would wait forever in their next collective: nothing of theirs is worth waiting for.
    echo "multiprocess_local.sh: a process exited with status $status: stopping the others" >&2
    stop_all KILL 0
    wait || true
    break
  fi
  running=("${still[@]+"${still[@]}"}")
  sleep 0.5
done
exit "$status"
