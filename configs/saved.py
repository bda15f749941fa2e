"""The config a run was trained with, read back from WORKDIR/config.json.

  python -m colorgan.main --mode=evaluate --workdir=DIR --config.num_eval_images=100
  python -m colorgan.main --mode=evaluate --workdir=DIR --config=configs/saved.py:DIR   # the same
  python -m colorgan.main --mode=summary --workdir=DIR     # the run's own networks

--mode=evaluate, colorize and export (and summary with --workdir) use this file when --config is not
given, so `--config.KEY=VALUE` overrides apply to the run's own config; error messages then name
"the run's config (DIR/config.json)", not this file. Keys added to configs/default.py after the run
was trained take their default values.
"""

import json
import os
import sys

import ml_collections

# config_flags loads this file by path: make its sibling configs importable from any working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402


def _merge(base: ml_collections.ConfigDict, saved: dict, path: str, prefix: str = "") -> None:
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(base.get(key), ml_collections.ConfigDict):
      _merge(base[key], value, path, f"{prefix}{key}.")
      continue
    try:
      base[key] = value
    except (TypeError, ValueError) as e:  # a value of another type than the key's
      raise ValueError(
        f"{prefix}{key}={value!r} is not a value of that key ({e}); fix it in "
        f"{path}, or pass --config"
      ) from None


def get_config(workdir: str | None = None) -> ml_collections.ConfigDict:
  if not workdir:
    raise ValueError("configs/saved.py needs the run's workdir: --config=configs/saved.py:WORKDIR")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"{path} does not exist: point --workdir at a training run, or pass --config")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(
      f"it cannot be read as JSON ({e}): restore {path}, or pass --config (the "
      "config the run was trained with)"
    ) from None
  config = default.get_config()
  _merge(config, saved, path)
  return config
