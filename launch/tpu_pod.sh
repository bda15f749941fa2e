#!/usr/bin/env bash
# Cloud TPU VM pod slice (v4-32, v5p-64, v5litepod-16, ...): the same command on every worker host.
#
# Usage (from your workstation, in the repository; gcloud authenticated, the TPU VM created):
#   export TPU_NAME=my-pod ZONE=us-central2-b          # and PROJECT=... unless gcloud has a default
#   launch/tpu_pod.sh setup                             # copy this commit + install deps on all workers
#   launch/tpu_pod.sh train CONFIG WORKDIR [COLORGAN FLAGS...]
#   launch/tpu_pod.sh train configs/default.py /mnt/shared/runs/r1 --config.batch_size=256 \
#       --config.compute_dtype=bfloat16
#   launch/tpu_pod.sh stop                              # end a run that holds the TPUs
# Environment: TPU_NAME, ZONE, PROJECT; REMOTE_DIR (default ~/colorgan on the workers); REMOTE_PYTHON
# (default python3.11: the pinned dependencies need Python 3.11).
#
# `train` runs `python -m colorgan.main --distributed=on ...` on all workers at once (gcloud ssh
# --worker=all); jax.distributed.initialize() learns the coordinator, process count and process id
# from the TPU VM metadata. WORKDIR must be a directory every worker sees (a Filestore/NFS mount or
# a gcsfuse-mounted bucket): every worker writes its part of each checkpoint there; worker 0 alone
# writes TensorBoard events and samples. config.batch_size is global and must divide by the number of
# TPU chips (cores on v2/v3). Rerunning `train` with the same WORKDIR resumes. A single-host TPU VM
# (v4-8, v5litepod-8) needs none of this: use launch/local.sh on it.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM name}" "${ZONE:?set ZONE to its zone}"
REMOTE_DIR="${REMOTE_DIR:-colorgan}"  # relative to the home directory on each worker
REMOTE_PYTHON="${REMOTE_PYTHON:-python3.11}"  # colorgan's pins need Python 3.11 on the workers
repo="$(cd "$(dirname "$0")/.." && pwd)"
gcloud_tpu=(gcloud compute tpus tpu-vm)
where=("$TPU_NAME" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"})

on_all_workers() {  # a shell command line, run on every worker at the same time
  "${gcloud_tpu[@]}" ssh "${where[@]}" --worker=all --command="$1"
}

case "${1:-}" in
  setup)
    archive="$(mktemp -t colorgan.XXXXXX.tar.gz)"
    trap 'rm -f "$archive"' EXIT
    git -C "$repo" archive --format=tar.gz -o "$archive" HEAD  # committed files only
    jax_version="$(sed -n 's/^jax==//p' "$repo/requirements.lock")"
    "${gcloud_tpu[@]}" scp "${where[@]}" --worker=all "$archive" "$TPU_NAME:colorgan.tar.gz"
    on_all_workers "mkdir -p $REMOTE_DIR && tar -xzf colorgan.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR \
      && $REMOTE_PYTHON -m venv .venv && .venv/bin/pip install --quiet --constraint requirements.lock -e . \
      && .venv/bin/pip install --quiet 'jax[tpu]==$jax_version' \
         -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
    ;;
  train)
    if (($# < 3)); then
      echo "usage: launch/tpu_pod.sh train CONFIG WORKDIR [COLORGAN FLAGS...]" >&2
      exit 2
    fi
    shift
    args=(--config="$1" --workdir="$2" --distributed=on "${@:3}")
    on_all_workers "cd $REMOTE_DIR && .venv/bin/python -m colorgan.main $(printf '%q ' "${args[@]}")"
    ;;
  stop)
    on_all_workers "pkill -INT -f 'python -m colorgan.main' || true"
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
