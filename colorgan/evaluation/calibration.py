"""A run's vividness knob chosen on its validation photos (colorgan.models.vividness).

The generator colorizes the validation photos once; every vividness is then a chroma gain on those
predictions, scored as evaluation scores them (the result rounded to uint8 RGB); an interpolated run
(config.phases.interpolate) colorizes them at each vividness's weights instead. The chroma gain's ends:
gain(0) is the least-squares gain, sum(pred . true) / sum(pred . pred) over every ab value, the gain
with the least squared ab error; gain(1) makes the results' mean colourfulness that of the photos (found
by bisection; never below gain(0)). The default v is the largest v on the grid whose mean PSNR is
within config.vividness.psnr_tolerance dB of v = 0's: as colourful as the run can be for almost no
accuracy (the trade-off is flat at the accurate end).
"""

import functools
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from colorgan import color
from colorgan import models
from colorgan.data import pipeline
from colorgan.evaluation import evaluator
from colorgan.evaluation import metrics
from colorgan.models import vividness

GAIN_SEARCH_MAX = 4.0  # the bisection's bracket for gain(1) (or twice gain(0), if more)


def predict_photos(
  config: ml_collections.ConfigDict, g_variables: dict[str, Any], photos: np.ndarray, predict=None
) -> tuple[np.ndarray, np.ndarray]:
  """(l, predicted ab) at model scale for uint8 RGB photos [N, S, S, 3], in eval batches; predict:
  the jitted generator (None: compiled here)."""
  if predict is None:
    predict = jax.jit(functools.partial(models.predict_ab, models.create_generator(config)))
  ls, abs_ = [], []
  for start in range(0, len(photos), config.eval_batch_size):
    l, _ = color.rgb_uint8_to_model_lab(photos[start : start + config.eval_batch_size])
    ls.append(np.asarray(l))
    abs_.append(np.asarray(predict(g_variables, l, None)))
  return np.concatenate(ls), np.concatenate(abs_)


def _generated(l, pred_ab, gain):
  """The results at chroma gain `gain`, uint8 RGB as evaluation scores them."""
  return evaluator.to_uint8(color.model_lab_to_rgb(l, pred_ab * gain))


@jax.jit
def _scores(l, pred_ab, photos, gain):
  return metrics.image_metrics(_generated(l, pred_ab, gain), photos)


@jax.jit
def _colorfulness(l, pred_ab, gain):
  return metrics.colorfulness(_generated(l, pred_ab, gain))


def image_scores(l, pred_ab, photos, gain: float) -> dict[str, np.ndarray]:
  """Per-image metrics (metrics.image_metrics: psnr, ssim, colorfulness, ...) at chroma gain `gain`."""
  return {k: np.asarray(v) for k, v in _scores(l, pred_ab, photos, jnp.float32(gain)).items()}


def gain_ends(l, pred_ab, photos) -> tuple[float, float]:
  """(gain(0), gain(1)): the least-squares gain, and the gain matching the photos' colourfulness."""
  _, true_ab = color.rgb_uint8_to_model_lab(photos)
  low = float(np.sum(pred_ab * np.asarray(true_ab)) / max(float(np.sum(pred_ab**2)), 1e-12))
  low = max(low, 0.0)
  target = float(np.mean(np.asarray(metrics.colorfulness(photos))))
  # The bisection needs colourfulness only: not the other metrics (SSIM, AuC) at every step.
  mean_cf = lambda gain: float(np.mean(np.asarray(_colorfulness(l, pred_ab, jnp.float32(gain)))))  # noqa: E731
  if mean_cf(low) >= target:
    return low, low
  lo, hi = low, max(GAIN_SEARCH_MAX, 2.0 * low)
  if mean_cf(hi) < target:
    return low, hi
  for _ in range(20):  # 2**-20 of the bracket
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if mean_cf(mid) < target else (lo, mid)
  return low, hi


def calibrate(
  config: ml_collections.ConfigDict, g_variables: dict[str, Any], photos: np.ndarray
) -> tuple[vividness.Calibration, list[dict[str, float]]]:
  """The run's Calibration and the per-vividness validation table it was chosen from."""
  l, pred_ab = predict_photos(config, g_variables, photos)
  return choose(l, pred_ab, photos, **_rule(config))


def _rule(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config's grid and default-vividness rule, as choose* take them (a run saved before
  vividness.colorfulness_share existed has the PSNR-tolerance rule)."""
  return {
    "grid_points": config.vividness.grid_points,
    "psnr_tolerance": config.vividness.psnr_tolerance,
    "colorfulness_share": config.vividness.get("colorfulness_share", 0.0),
  }


def choose(
  l: np.ndarray,
  pred_ab: np.ndarray,
  photos: np.ndarray,
  *,
  grid_points: int = 21,
  psnr_tolerance: float = 0.15,
  colorfulness_share: float = 0.0,
) -> tuple[vividness.Calibration, list[dict[str, float]]]:
  """calibrate on predictions already made: (l, pred_ab) of predict_photos(photos)."""
  low, high = gain_ends(l, pred_ab, photos)
  table = []
  for v in np.linspace(0.0, 1.0, grid_points):
    scores = image_scores(l, pred_ab, photos, low + v * (high - low))
    table.append(
      {"vividness": round(float(v), 4), "chroma_gain": low + v * (high - low)}
      | {k: float(np.mean(s)) for k, s in scores.items()}
    )
  cal = _with_default(
    "chroma_gain", low, high, table, len(photos), psnr_tolerance, colorfulness_share
  )
  return cal, table


def _with_default(method, low, high, table, count, tolerance, share=0.0) -> vividness.Calibration:
  """The Calibration whose default is the largest v of `table` within `tolerance` dB of v=0's PSNR,
  or with share > 0 the smallest v whose mean colourfulness reaches `share` of the photos' (v=1 if
  none does)."""
  if share > 0:
    reached = [r["vividness"] for r in table if r["colorfulness"] >= share * r["true_colorfulness"]]
    default = min(reached, default=table[-1]["vividness"])
    rule = f"the smallest v whose colourfulness on {count} validation photos is {share:g} of theirs"
    return vividness.Calibration(method, low, high, default, rule)
  usable = [row for row in table if row["psnr"] >= table[0]["psnr"] - tolerance]
  default = max(row["vividness"] for row in usable)
  rule = (
    f"the largest v whose mean PSNR on {count} validation photos is within {tolerance:g} dB of "
    "v=0's"
  )
  return vividness.Calibration(method, low, high, default, rule)


def choose_interpolated(
  config: ml_collections.ConfigDict,
  final: dict[str, Any],
  saved: dict[str, Any],
  photos: np.ndarray,
  *,
  grid_points: int = 21,
  psnr_tolerance: float = 0.15,
  colorfulness_share: float = 0.0,
) -> tuple[vividness.Calibration, list[dict[str, float]]]:
  """The calibration of an interpolated run (v = the interpolation weight), each v's variables
  colorizing the photos (models.vividness.interpolate of `saved`, read_interpolation's)."""
  predict = jax.jit(functools.partial(models.predict_ab, models.create_generator(config)))
  final = jax.device_get(final)
  table = []
  for v in np.linspace(0.0, 1.0, grid_points):
    variables = vividness.interpolate(final, saved, float(v))
    l, pred_ab = predict_photos(config, variables, photos, predict)
    scores = image_scores(l, pred_ab, photos, 1.0)
    table.append(
      {"vividness": round(float(v), 4)} | {k: float(np.mean(s)) for k, s in scores.items()}
    )
  cal = _with_default(
    "interpolation", 0.0, 1.0, table, len(photos), psnr_tolerance, colorfulness_share
  )
  return cal, table


def choose_temperature(
  config: ml_collections.ConfigDict,
  g_variables: dict[str, Any],
  photos: np.ndarray,
  *,
  min_temperature: float = 0.2,
  grid_points: int = 21,
  psnr_tolerance: float = 0.15,
  colorfulness_share: float = 0.0,
) -> tuple[vividness.Calibration, list[dict[str, float]]]:
  """The calibration of a classification head: v moves the annealed mean's temperature from 1 to
  min_temperature (one program: the temperature is traced)."""
  generator = models.create_generator(config)
  predict = jax.jit(
    lambda variables, l, t: models.predict_ab(generator, variables, l, None, temperature=t)
  )
  table = []
  for v in np.linspace(0.0, 1.0, grid_points):
    t = 1.0 - v * (1.0 - min_temperature)
    l, pred_ab = predict_photos(
      config, g_variables, photos, lambda variables, l, hints, t=t: predict(variables, l, t)
    )
    scores = image_scores(l, pred_ab, photos, 1.0)
    table.append(
      {"vividness": round(float(v), 4), "temperature": float(t)}
      | {k: float(np.mean(s)) for k, s in scores.items()}
    )
  cal = _with_default(
    "temperature", 1.0, min_temperature, table, len(photos), psnr_tolerance, colorfulness_share
  )
  return cal, table


def calibrate_run(
  config: ml_collections.ConfigDict, g_variables: dict[str, Any], images: pipeline.Images, workdir
) -> vividness.Calibration:
  """Calibrates on the first config.vividness.num_images eval photos, writes WORKDIR/vividness.json
  (process 0) and logs the default."""
  photos = pipeline.load_eval_images(config, images, config.vividness.num_images)
  if models.is_classification(config):
    calibration, table = choose_temperature(
      config, g_variables, photos, min_temperature=config.vividness.min_temperature, **_rule(config)
    )
  elif config.phases.interpolate:
    saved = vividness.read_interpolation(workdir)
    calibration, table = choose_interpolated(config, g_variables, saved, photos, **_rule(config))
  else:
    calibration, table = calibrate(config, g_variables, photos)
  if jax.process_index() == 0:
    vividness.write(workdir, calibration, table)
  row = next(r for r in table if r["vividness"] == calibration.default)
  logging.info(
    "Vividness: default v=%.2f (%s %.3f; v=0: %.3f, v=1: %.3f), %s: PSNR %.2f dB (v=0: "
    "%.2f), colourfulness %.1f (v=0: %.1f; the photos: %.1f). Written to %s",
    calibration.default,
    {"chroma_gain": "chroma gain", "interpolation": "interpolation weight"}.get(
      calibration.method, "temperature"
    ),
    calibration.parameter(calibration.default),
    calibration.low,
    calibration.high,
    calibration.rule,
    row["psnr"],
    table[0]["psnr"],
    row["colorfulness"],
    table[0]["colorfulness"],
    row["true_colorfulness"],
    vividness.FILE,
  )
  return calibration
