"""How much a hints model follows hints: the PSNR gain of 10 ground-truth points over none.

Measured at the end of a hints run's training on its eval split (the points of evaluation's by-hints
scores, hints.ground_truth_hints) and written to WORKDIR/eval/hint_response.json:

  {"step": N, "num_images": n, "count": 10, "psnr_without": x, "psnr_with": y, "gain_db": y - x,
   "weak_below_db": 1.0, "weak": true|false}

A model whose gain is under WEAK_DB mostly ignores hints (clicks on the page change little): the
training log and the page (colorgan.serve) say so.
"""

from __future__ import annotations  # the measuring types are imported only to measure

import dataclasses
import json
import os
from typing import Any, TYPE_CHECKING

from absl import logging
import ml_collections

from colorgan import fileio
from colorgan.evaluation import records

if TYPE_CHECKING:  # measuring imports them (TensorFlow); the page only reads the file
  from colorgan.data import pipeline
  from colorgan.evaluation import evaluator

COUNT = 10  # ground-truth points per photo, as README's "10 points vs none"
WEAK_DB = 1.0  # under this PSNR gain the hints barely move the colors
FILE = os.path.join(records.EVAL_DIR, "hint_response.json")


@dataclasses.dataclass(frozen=True)
class Response:
  step: int
  num_images: int
  psnr_without: float  # the model given no hint
  psnr_with: float  # given COUNT ground-truth points per photo
  count: int = COUNT

  @property
  def gain_db(self) -> float:
    return self.psnr_with - self.psnr_without

  @property
  def weak(self) -> bool:
    return not self.gain_db >= WEAK_DB  # a NaN gain is weak too

  def to_json(self) -> dict[str, Any]:
    return {
      "step": self.step,
      "num_images": self.num_images,
      "count": self.count,
      "psnr_without": self.psnr_without,
      "psnr_with": self.psnr_with,
      "gain_db": self.gain_db,
      "weak_below_db": WEAK_DB,
      "weak": self.weak,
    }


def from_result(result: dict[str, Any]) -> Response | None:
  """The response in an evaluation's result, when its by_hints holds 0 and COUNT points."""
  by_hints = result.get("by_hints", {})
  if "0" not in by_hints or str(COUNT) not in by_hints:
    return None
  return Response(
    int(result["step"]),
    int(result["num_images"]),
    by_hints["0"]["psnr"],
    by_hints[str(COUNT)]["psnr"],
  )


def measure(
  config: ml_collections.ConfigDict,
  predict: evaluator.Predict,
  mesh,
  images: pipeline.Images,
  g_variables: dict[str, Any],
  step: int,
) -> Response:
  """Scores the generator (variables replicated over the mesh) with 0 and COUNT points per photo.

  Only the by-hints step runs: no FID or LPIPS network is loaded for it.
  """
  config = config.copy_and_resolve_references()
  config.eval.hint_counts = (0, COUNT)
  config.eval.inception_weights = config.eval.lpips_weights = ""
  from colorgan.evaluation import evaluator  # pylint: disable=g-import-not-at-top

  scorer = evaluator.Evaluator(config, predict, mesh, images, use_hints=True)
  by_hints = scorer.by_hints(g_variables)
  return Response(int(step), scorer.num_images, by_hints["0"]["psnr"], by_hints[str(COUNT)]["psnr"])


def describe(response: Response) -> str:
  """One line: the figure and, when weak, what it means."""
  line = (
    f"hint response at step {response.step}: {response.count} ground-truth points per photo "
    f"take PSNR from {response.psnr_without:.2f} to {response.psnr_with:.2f} dB "
    f"({response.gain_db:+.2f} dB) on {response.num_images} eval photos"
  )
  if response.weak:
    line += (
      f"; under {WEAK_DB:g} dB this model mostly ignores hints (train longer or on more "
      'photos: README "Color hints")'
    )
  return line


def record(response: Response, workdir: str) -> str:
  """Writes WORKDIR/eval/hint_response.json (atomically); returns its path."""
  path = os.path.join(workdir, FILE)
  fileio.write_text(path, records.to_json(response.to_json()) + "\n")  # inf/nan as null
  return path


def log(response: Response, path: str) -> None:
  """The training log's line: a warning when the response is weak."""
  if response.weak:
    logging.warning("Weak %s -> %s", describe(response), path)
  else:
    logging.info("The %s -> %s", describe(response), path)


def read(workdir: str) -> dict[str, Any] | None:
  """WORKDIR/eval/hint_response.json, or None when the run has none (or it cannot be read)."""
  try:
    with open(os.path.join(workdir, FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def page_note(workdir: str) -> str | None:
  """The page's line for a run whose recorded hint response is weak; None otherwise."""
  found = read(workdir)
  if not found or not found.get("weak"):
    return None
  gain = found.get("gain_db")
  figure = "an unknown amount" if gain is None else f"only {gain:+.2f} dB"
  return (
    f"**This model barely follows hints:** at the end of its training (step "
    f"{found.get('step')}), {found.get('count', COUNT)} true-color points per photo raised "
    f"PSNR on its eval photos by {figure} (under {WEAK_DB:g} dB), so clicks may change "
    'little. Train longer or on more photos (README "Color hints").'
  )
