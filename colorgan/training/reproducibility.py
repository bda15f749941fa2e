"""The reproducibility record: what a run needs to be repeated, written into its workdir.

workdir/reproducibility.json holds {"runs": [...]}, one entry per start (a resumed run appends): the
exact config, the command line, the colorgan git commit when the code is a git checkout, every
installed package's version, and the JAX backend and devices.
"""

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from typing import Any

from absl import logging
import jax
import ml_collections

from colorgan import fileio

FILENAME = "reproducibility.json"
# Environment variables that change what JAX, XLA or TensorFlow do.
_ENV_PREFIXES = (
  "JAX_",
  "XLA_",
  "TF_CPP_",
  "TF_XLA_",
  "TF_ENABLE_",
  "TF_NUM_",
  "TPU_",
  "NCCL_",
  "CUDA_VISIBLE_DEVICES",
  "OMP_NUM_THREADS",
)


def git_info(path: str | None = None) -> dict[str, Any] | None:
  """{"commit", "dirty"} of the git checkout holding `path` (colorgan's source), or None."""
  path = path or os.path.dirname(os.path.abspath(__file__))

  def git(*args):
    return subprocess.run(
      ["git", "-C", path, *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout

  try:
    commit = git("rev-parse", "HEAD").strip()
    changes = git("status", "--porcelain", "--untracked-files=no").splitlines()
    diff = git("diff", "HEAD") if changes else ""
  except (OSError, subprocess.SubprocessError):
    return None  # not a git checkout (an installed package), or no git
  # Uncommitted changes: which files, and a hash of the diff to recognize the exact tree again.
  return {
    "commit": commit,
    "dirty": bool(changes),
    "changed_files": [line[3:] for line in changes],
    "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if changes else None,
  }


def package_versions() -> dict[str, str]:
  """Every installed distribution: name -> version (what `pip freeze` would list)."""
  versions = {}
  for dist in importlib.metadata.distributions():
    name = dist.metadata["Name"]
    if name:
      versions[name] = dist.version
  return dict(sorted(versions.items(), key=lambda kv: kv[0].lower()))


def device_info() -> dict[str, Any]:
  return {
    "backend": jax.default_backend(),
    "process_index": jax.process_index(),
    "process_count": jax.process_count(),
    "device_count": jax.device_count(),
    "devices": [str(d) for d in jax.devices()],
    "device_kinds": sorted({d.device_kind for d in jax.devices()}),
  }


def record(
  config: ml_collections.ConfigDict, *, start_step: int, argv: list[str] | None = None
) -> dict[str, Any]:
  """This start of the run, as a JSON-able dict."""
  return {
    "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "start_step": start_step,
    "command_line": list(sys.orig_argv if argv is None else argv),  # python -m colorgan.main ...
    "cwd": os.getcwd(),
    "python": sys.version.split()[0],
    "executable": sys.executable,
    "platform": platform.platform(),
    "hostname": socket.gethostname(),
    "git": git_info(),
    "jax": device_info(),
    "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
    "packages": package_versions(),
    "config": json.loads(config.to_json_best_effort()),
  }


def write_record(
  workdir: str, config: ml_collections.ConfigDict, *, start_step: int, argv: list[str] | None = None
) -> str:
  """Appends this start to workdir/reproducibility.json (atomically replaced). Returns its path."""
  path = os.path.join(workdir, FILENAME)
  runs = []
  if os.path.exists(path):
    try:
      with open(path) as f:
        runs = json.load(f)["runs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      logging.warning(
        "%s is unreadable (%s): starting a new record, the old one kept as %s.bad", path, e, path
      )
      os.replace(path, path + ".bad")
  runs.append(record(config, start_step=start_step, argv=argv))
  fileio.write_text(path, json.dumps({"runs": runs}, indent=1) + "\n")  # a kill mid-write
  #                                                                      keeps the previous record
  return path
