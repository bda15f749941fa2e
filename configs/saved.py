"""The config a run was trained with, read back from WORKDIR/config.json.

  python -m colorgan.main --mode=evaluate --workdir=DIR --config.num_eval_images=100
  python -m colorgan.main --mode=evaluate --workdir=DIR --config=configs/saved.py:DIR   # the same

--mode=evaluate and --mode=colorize use this file when --config is not given, so `--config.KEY=VALUE`
overrides apply to the run's own config. Keys added to configs/default.py after the run was trained
take their default values.
"""

import json
import os
import sys

import ml_collections

# config_flags loads this file by path: make its sibling configs importable from any working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402


def _merge(base: ml_collections.ConfigDict, saved: dict) -> None:
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(base.get(key), ml_collections.ConfigDict):
      _merge(base[key], value)
    else:
      base[key] = value


def get_config(workdir: str | None = None) -> ml_collections.ConfigDict:
  if not workdir:
    raise ValueError("configs/saved.py needs the run's workdir: --config=configs/saved.py:WORKDIR")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"{path} does not exist: point --workdir at a training run, or pass --config")
  with open(path) as f:
    saved = json.load(f)
  config = default.get_config()
  _merge(config, saved)
  return config
