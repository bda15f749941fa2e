"""One knob along the accuracy-colourfulness trade-off: vividness v in [0, 1] (README "Recipes").

v = 0 is the run's most accurate output, v = 1 its most colourful one that is still meant to be used.
What v moves depends on the model; today every generator is a plain ab regressor, for which v sets a
chroma gain, ab -> gain(v) * ab, with gain(0) the least-squares gain on the run's validation split
(the accurate end; about 1 for a model trained with L2) and gain(1) the gain at which the results are
as colourful as the validation photos (never below gain(0)). Both ends and the run's default v are
chosen on the validation split at the end of training (colorgan.evaluation.calibration) and stored in
WORKDIR/vividness.json, which colorize, evaluate, export and the page read.
"""

import dataclasses
import json
import os
from typing import Any

from colorgan import errors
from colorgan import fileio

FILE = "vividness.json"
METHODS = ("chroma_gain",)


@dataclasses.dataclass(frozen=True)
class Calibration:
  """A run's vividness: what v moves, its two ends, and the default v chosen on validation photos."""

  method: str  # METHODS
  low: float  # the parameter at v = 0 (chroma_gain: the gain)
  high: float  # the parameter at v = 1
  default: float  # the run's default v
  rule: str = ""  # how default was chosen, in words (for the log and the file's reader)

  def chroma_gain(self, v: float) -> float:
    """The gain on ab at vividness v (linear between the two ends)."""
    return self.low + v * (self.high - self.low)


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


def resolve(workdir: str, v: float | None) -> tuple[float, float | None]:
  """(chroma gain, v in force) for --vividness=v (None: the run's default, or no knob at all).

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
    return 1.0, None
  v = calibration.default if v is None else v
  return calibration.chroma_gain(v), v
