"""What an evaluation scores: a run's eval split (config.data) or every photo of --input.

Each evaluation JSON records its data under "data" (`record`): the source ("bundled", "folder",
"tfds" or "input"), the folder's path or the TFDS name, and the split; the number of photos and
their size are the JSON's own "num_images" and "image_size". The record holds strings only: the
sweep table (launch/sweep.py) reads every number of the JSON as a metric.

A run's record of itself is WORKDIR/eval/step_<N>.json; an evaluation of other data (another
folder or split, --input, another image size or number of photos) goes beside it, into
WORKDIR/eval/<name>/step_<N>.json, `name` saying what was scored (`name`).
"""

import glob
import os
import re
from typing import Any, Sequence

import ml_collections

from colorgan import errors
from colorgan.data import decode
from colorgan.data import sources

# The keys that decide which photos an evaluation scores, and how they are cropped.
EVAL_DATA_KEYS = (
  "image_size",
  "num_eval_images",
  "data.source",
  "data.path",
  "data.eval_fraction",
  "data.split_seed",
  "data.tfds_name",
  "data.tfds_data_dir",
  "data.eval_split",
  "data.image_key",
  "data.load_size",
  "data.resize_mode",
)
_MISSING = object()


def _folder_split(root: str, data: ml_collections.ConfigDict) -> str:
  """The folder's eval split as colorgan.data.sources picks it: val/ beside train/, else a hash."""
  for name in ("val", "validation"):
    if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, name)):
      return f"{name}/"
  return f"eval_fraction={data.eval_fraction} split_seed={data.split_seed}"


def record(config: ml_collections.ConfigDict) -> dict[str, str]:
  """The "data" entry of an evaluation of config.data's eval split."""
  data = config.data
  if data.source == "folder":
    root = os.path.abspath(os.path.expanduser(data.path))
    return {"source": "folder", "path": root, "split": _folder_split(root, data)}
  if data.source == "tfds":
    return {"source": "tfds", "tfds_name": data.tfds_name, "split": data.eval_split}
  # The bundled photos: evaluation uses all of them (training does too).
  return {"source": data.source, "split": "all"}


def input_record(inputs: Sequence[str]) -> dict[str, Any]:
  """The "data" entry of an evaluation of every photo of --input."""
  return {
    "source": "input",
    "path": [os.path.abspath(os.path.expanduser(spec)) for spec in inputs],
    "split": "all",
  }


def _sanitized(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:64]


def _input_name(spec: str) -> str:
  spec = os.path.normpath(os.path.expanduser(spec))
  base = os.path.basename(spec)
  if glob.has_magic(base):  # photos/*.jpg -> photos_jpg
    return "_".join(
      filter(None, (_sanitized(os.path.basename(os.path.dirname(spec))), _sanitized(base)))
    )
  return _sanitized(os.path.splitext(base)[0] if os.path.isfile(spec) else base)


def name(data: dict[str, Any]) -> str:
  """A folder name for WORKDIR/eval/<name>/ that says which data `data` (a record) is."""
  if data["source"] == "input":
    found = "+".join(filter(None, (_input_name(spec) for spec in data["path"])))
  elif data["source"] == "folder":
    found = _sanitized(os.path.basename(data["path"]))
  elif data["source"] == "tfds":
    found = _sanitized(f"{data['tfds_name']}_{data['split']}")
  else:
    found = _sanitized(data["source"])
  return found[:64] or data["source"]


def _value(config: ml_collections.ConfigDict, key: str):
  value = config
  for part in key.split("."):
    if part not in value:
      return _MISSING
    value = value[part]
  return value


def is_runs_own(config: ml_collections.ConfigDict, run_config: ml_collections.ConfigDict) -> bool:
  """Whether evaluating with `config` scores what the run's own evaluations (run_config) score.

  A key that one of them lacks (a run from before it existed) does not count as a difference.
  """
  for key in EVAL_DATA_KEYS:
    a, b = _value(config, key), _value(run_config, key)
    if a is not _MISSING and b is not _MISSING and a != b:
      return False
  return True


def _input_paths(spec: str) -> list[str]:
  """The image files an --input names: a photo, a folder (recursive) or a glob."""
  expanded = os.path.expanduser(spec)
  found = []
  for path in (
    [expanded] if os.path.exists(expanded) else sorted(glob.glob(expanded, recursive=True))
  ):
    if os.path.isdir(path):
      found += [os.path.join(path, p) for p in sources.list_image_files(path)]
    elif os.path.isfile(path) and path.lower().endswith(sources.IMAGE_EXTENSIONS):
      found.append(path)
  return found


def input_images(inputs: Sequence[str]) -> sources.FileImages:
  """Every usable photo of --input (unusable files are logged and skipped).

  Raises:
    errors.DataError: an --input that names no photo, or no usable photo at all.
  """
  paths = {}  # in order, once each
  for spec in inputs:
    found = _input_paths(spec)
    if not found:
      raise errors.DataError(
        f"--input={spec} names no photo ({' '.join(sources.IMAGE_EXTENSIONS)}"
        ", any case): give a photo, a folder of photos or a glob"
      )
    paths.update(dict.fromkeys(found))
  good, bad = decode.check_image_files(tuple(paths), what="input")
  decode.report_checked_files("--input", len(paths), len(good), bad)
  if not good:
    raise errors.DataError(
      f"--input: none of its {len(paths)} image files is usable "
      f"({decode.reason_counts(bad)}); colorgan scores color photos"
    )
  return sources.FileImages(good)
