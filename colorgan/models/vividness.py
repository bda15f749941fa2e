"""One knob along the accuracy-colourfulness trade-off: vividness v in [0, 1] (README "Recipes").

v = 0 is the run's most accurate output, v = 1 its most colourful one that is still meant to be used.
What v moves depends on the run:
  temperature    a classification head (config.model.ab_head): the annealed mean's temperature, from
                 T = 1 (the mean, v = 0) to config.vividness.min_temperature (v = 1);
  interpolation  a run with config.phases.interpolate: the generator's weights interpolated between
                 the end of its reconstruction phase (v = 0) and its final GAN weights (v = 1), as
                 ESRGAN's network interpolation, with BatchNorm statistics re-estimated on training
                 batches (WORKDIR/interpolation.npz, colorgan.training.interpolation);
  chroma_gain    any other generator (a plain ab regressor): ab -> gain(v) * ab, gain(0) the
                 least-squares gain on the run's validation split (the accurate end; about 1 for a
                 model trained with L2) and gain(1) the gain at which the results are as colourful as
                 the validation photos (never below gain(0)).
The ends and the run's default v are chosen on the validation split at the end of training
(colorgan.evaluation.calibration) and stored in WORKDIR/vividness.json, which colorize, evaluate,
export and the page read.
"""

import dataclasses
import json
import os
from typing import Any, NamedTuple

import numpy as np

from colorgan import errors
from colorgan import fileio

FILE = "vividness.json"
INTERPOLATION_FILE = "interpolation.npz"
METHODS = ("chroma_gain", "interpolation", "temperature")


@dataclasses.dataclass(frozen=True)
class Calibration:
  """A run's vividness: what v moves, its two ends, and the default v chosen on validation photos."""

  method: str  # METHODS
  low: float  # the parameter at v = 0 (chroma_gain: the gain; interpolation: the weight, 0;
  #             temperature: T = 1)
  high: float  # the parameter at v = 1
  default: float  # the run's default v
  rule: str = ""  # how default was chosen, in words (for the log and the file's reader)

  def parameter(self, v: float) -> float:
    """What v sets (linear between the two ends)."""
    return self.low + v * (self.high - self.low)

  def chroma_gain(self, v: float) -> float:
    """The gain on ab at vividness v (1 for an interpolated run)."""
    return self.parameter(v) if self.method == "chroma_gain" else 1.0


class Setting(NamedTuple):
  """The vividness in force for a command: v (None: no knob), ab's gain, the interpolation weight
  (None: the checkpoint's own weights)."""

  v: float | None
  chroma_gain: float = 1.0
  alpha: float | None = None
  temperature: float = 1.0  # a classification head's annealed mean

  def describe(self) -> dict[str, float]:
    """For JSON records: {} without a knob."""
    if self.v is None:
      return {}
    if self.alpha is not None:
      return {"vividness": self.v, "alpha": self.alpha}
    if self.temperature != 1.0:
      return {"vividness": self.v, "temperature": self.temperature}
    return {"vividness": self.v, "chroma_gain": self.chroma_gain}


MODES = ("colorize", "evaluate", "export")  # the --mode values that take --vividness


def check(v: float, *, flag: str = "--vividness", mode: str | None = None) -> float:
  """v itself, or UsageError naming the flag when it is outside [0, 1] (or given to a --mode
  that colorizes nothing)."""
  if mode is not None and mode not in MODES:
    raise errors.UsageError(f"{flag} is for --mode={', '.join(MODES)}, not --mode={mode}")
  if not 0.0 <= v <= 1.0:
    raise errors.UsageError(f"{flag}={v:g} is out of range: vividness is a number in [0, 1]")
  return float(v)


def write(workdir: str, calibration: Calibration, table: list[dict[str, Any]]) -> str:
  """WORKDIR/vividness.json: the calibration and the validation metrics it was chosen from."""
  path = os.path.join(workdir, FILE)
  fileio.write_text(path, json.dumps({**dataclasses.asdict(calibration), "table": table}, indent=1))
  return path


def read(workdir: str) -> Calibration | None:
  """The run's calibration; None when the run has none (trained without config.vividness.calibrate).

  Raises:
    errors.ConfigError: the file exists but is not a calibration (names the file and the problem).
  """
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    fields = {f.name: saved[f.name] for f in dataclasses.fields(Calibration) if f.name != "rule"}
    calibration = Calibration(**fields, rule=saved.get("rule", ""))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise errors.ConfigError(
      f"{path} cannot be read as a vividness calibration ({type(e).__name__}: {e}): "
      "delete it to colorize without a vividness knob"
    ) from None
  if calibration.method not in METHODS or not 0 <= calibration.default <= 1:
    raise errors.ConfigError(
      f"{path}: method {calibration.method!r} / default {calibration.default!r} is not a "
      f"calibration this colorgan knows ({', '.join(METHODS)}; default in [0, 1])"
    )
  return calibration


def resolve(workdir: str, v: float | None) -> Setting:
  """The Setting for --vividness=v (None: the run's default, or no knob at all).

  Raises:
    errors.UsageError: v out of range, or v given for a run without a calibration.
  """
  if v is not None:
    check(v)
  calibration = read(workdir)
  if calibration is None:
    if v is not None:
      raise errors.UsageError(
        f"--vividness needs the run's calibration {os.path.join(workdir, FILE)}, which is not "
        "there: train with --config.vividness.calibrate=True (it is chosen on the validation "
        "photos at the end of training), or leave --vividness out"
      )
    return Setting(None)
  return setting(calibration, calibration.default if v is None else v)


def setting(calibration: Calibration, v: float) -> Setting:
  """The Setting of a calibration at vividness v."""
  if calibration.method == "interpolation":
    return Setting(v, 1.0, calibration.parameter(v))
  if calibration.method == "temperature":
    return Setting(v, temperature=calibration.parameter(v))
  return Setting(v, calibration.chroma_gain(v))


# ----------------------------------------------------------------------------- interpolation
def read_interpolation(workdir: str) -> dict[str, Any]:
  """WORKDIR/interpolation.npz as {"anchor": variables, "alphas": [K], "stats": [K batch_stats]}.

  Raises:
    errors.ConfigError: the file is missing or unreadable (names it).
  """
  path = os.path.join(workdir, INTERPOLATION_FILE)
  try:
    flat = fileio.read_npz(path)
  except ValueError as e:
    raise errors.ConfigError(
      f"{e}: the run's vividness interpolates weights and needs it (written at the end of "
      "training with config.phases.interpolate)"
    ) from None
  alphas = flat.pop("alphas")
  tree = fileio.unflatten(flat)
  stats = [tree["stats"][str(k)] for k in range(len(alphas))]
  return {"anchor": tree["anchor"], "alphas": alphas, "stats": stats}


def mix(a: Any, b: Any, t: float) -> Any:
  """(1 - t) * a + t * b, leaf by leaf, as numpy arrays of b's dtypes."""
  import jax  # pylint: disable=g-import-not-at-top

  return jax.tree.map(
    lambda x, y: np.asarray((1.0 - t) * np.asarray(x) + t * np.asarray(y), np.asarray(y).dtype),
    a,
    b,
  )


def interpolate(final: dict[str, Any], saved: dict[str, Any], alpha: float) -> dict[str, Any]:
  """The generator's variables at weight alpha: params (1 - alpha) * anchor + alpha * final, the
  BatchNorm statistics interpolated between those re-estimated at the two nearest saved weights."""
  alphas = saved["alphas"]
  hi = int(np.clip(np.searchsorted(alphas, alpha), 1, len(alphas) - 1))
  t = float((alpha - alphas[hi - 1]) / (alphas[hi] - alphas[hi - 1]))
  return {
    "params": mix(saved["anchor"]["params"], final["params"], alpha),
    "batch_stats": mix(saved["stats"][hi - 1], saved["stats"][hi], t),  # saved as the run's dtypes
  }


def variables_at(workdir: str, final: dict[str, Any], chosen: Setting) -> dict[str, Any]:
  """The generator's variables for a Setting: the checkpoint's own, or interpolated."""
  if chosen.alpha is None:
    return final
  return interpolate(final, read_interpolation(workdir), chosen.alpha)
