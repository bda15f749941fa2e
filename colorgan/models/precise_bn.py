"""Precise BatchNorm statistics for inference (config.precise_bn_batches; README "Recipes").

BatchNorm's running averages follow the last few steps' weights (momentum 0.9: about ten batches of
16), which is a noisy estimate of the population statistics of the final weights. Wu and Johnson
("Rethinking 'Batch' in BatchNorm", 2021) re-estimate them at the end of training, with the weights
fixed, as the mean of many training batches' statistics. The training loop does that at the last
step (colorgan.training.interpolation.reestimate) and writes them to WORKDIR/precise_bn.npz with the
step; every inference path (evaluation, samples, colorize, export, serve, the vividness calibration)
uses them for that step's checkpoint. The state keeps its running averages, so a resumed longer run
stays bit-identical to an uninterrupted one.
"""

import os
from typing import Any

import numpy as np

from colorgan import errors
from colorgan import fileio

FILE = "precise_bn.npz"


def write(workdir: str, step: int, batch_stats: dict[str, Any]) -> str:
  """WORKDIR/precise_bn.npz: the generator's batch_stats re-estimated at `step` (written atomically)."""
  flat = {f"stats/{k}": np.asarray(v) for k, v in fileio.flatten(batch_stats).items()}
  flat["step"] = np.int64(step)
  path = os.path.join(workdir, FILE)
  with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
    np.savez(f, **flat)
  return path


def read(workdir: str, step: int) -> dict[str, Any] | None:
  """The statistics written for `step`, or None (no file, or one for another step).

  Raises:
    errors.ConfigError: the file cannot be read (names it).
  """
  path = os.path.join(workdir, FILE)
  if not os.path.isfile(path):
    return None
  try:
    arrays = fileio.read_npz(path)
  except ValueError as e:
    raise errors.ConfigError(
      f"{e}: remove it to use the checkpoint's running averages, or train on to rewrite it"
    ) from None
  if int(arrays.get("step", -1)) != int(step):
    return None
  return fileio.unflatten({k[len("stats/") :]: v for k, v in arrays.items() if k != "step"})


def apply(variables: dict[str, Any], stats: dict[str, Any] | None) -> dict[str, Any]:
  """The generator's {"params", "batch_stats"} with `stats` as its batch_stats (None: unchanged)."""
  if stats is None:
    return variables
  return {**variables, "batch_stats": stats}
