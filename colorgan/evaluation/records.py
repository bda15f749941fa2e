"""An evaluation's record: WORKDIR/eval/step_<N>.json, TensorBoard scalars and the log's line.

The result of colorgan.evaluation.evaluator (its module docstring lists the keys) is written as JSON
(inf and nan as null) to WORKDIR/eval/step_<N>.json, or WORKDIR/eval/<name>/step_<N>.json for other
data than the run's own eval split, and as eval/<who>/<metric> (eval_<name>/...) scalars; a result
with "by_hints" adds eval/hints_<n>/<metric> and the plot eval/psnr_by_hints_step_<N>.png.
"""

import json
import math
import os
from typing import Any

from colorgan import fileio
from colorgan.evaluation import metrics
from colorgan.evaluation import plot

EVAL_DIR = "eval"


def _json_safe(value):
  """JSON has no inf/nan (PSNR of an exact reconstruction is inf): those become null."""
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def to_json(result: dict[str, Any]) -> str:
  """`result` as one line of JSON, inf and nan as null."""
  return json.dumps(_json_safe(result), sort_keys=False, allow_nan=False)


def record(result: dict[str, Any], workdir: str, writer=None, *, name: str | None = None) -> str:
  """Writes `result` to WORKDIR/eval/step_<N>.json (atomically) and, with a writer, to TensorBoard.

  Args:
    name: for other data than the run's own eval split: WORKDIR/eval/<name>/step_<N>.json, and
      eval_<name>/... in TensorBoard, so that the run's own record is never overwritten.

  Returns:
    The JSON file's path.
  """
  step = result["step"]
  directory = os.path.join(workdir, EVAL_DIR, *([name] if name else []))
  tag = f"eval_{name}" if name else "eval"
  if writer is not None:
    writer.write_scalars(
      step,
      {
        f"{tag}/{who}/{metric}": value
        for who in ("model", "baseline")
        for metric, value in result[who].items()
        if value is not None
      },
    )
  path = os.path.join(directory, f"step_{step}.json")
  fileio.write_text(path, to_json(result) + "\n")
  if "by_hints" in result:
    record_by_hints(result, directory, writer, tag=tag)
  return path


def record_by_hints(
  result: dict[str, Any], directory: str, writer=None, *, tag: str = "eval"
) -> str:
  """TensorBoard's <tag>/hints_<n>/<name> and the plot DIRECTORY/psnr_by_hints_step_<N>.png.

  Returns:
    The plot's path.
  """
  step, by_hints = result["step"], result["by_hints"]
  if writer is not None:
    writer.write_scalars(
      step,
      {
        f"{tag}/hints_{n}/{name}": value
        for n, values in by_hints.items()
        for name, value in values.items()
      },
    )
  image = plot.line_plot(
    [int(n) for n in by_hints],
    [values["psnr"] for values in by_hints.values()],
    title=f"PSNR by number of hints (step {step}, {result['num_images']} photos)",
    x_label="ground-truth points per photo",
    y_label="PSNR (dB)",
    reference=(result["baseline"]["psnr"], "gray baseline"),
  )
  path = os.path.join(directory, f"psnr_by_hints_step_{step}.png")
  with fileio.atomic_path(path) as tmp:
    image.save(tmp, format="PNG")
  return path


def summary_line(result: dict[str, Any]) -> str:
  model, baseline = result["model"], result["baseline"]
  names = metrics.METRIC_NAMES + tuple(k for k in metrics.FEATURE_METRIC_NAMES if k in model)
  number = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
  line = " ".join(f"{k}={number(model[k])}/{number(baseline[k])}" for k in names)
  if "by_hints" in result:
    line += "; psnr by hints: " + " ".join(
      f"{n}:{values['psnr']:.4g}" for n, values in result["by_hints"].items()
    )
  return line


def ranking_metrics(result: dict[str, Any]) -> dict[str, float]:
  """The model's metrics as best_checkpoint_metric names them: {"eval/fid": ...}."""
  return {
    f"eval/{k}": float(v) for k, v in result["model"].items() if v is not None and math.isfinite(v)
  }
