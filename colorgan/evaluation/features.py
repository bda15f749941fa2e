"""FID, KID and LPIPS in evaluation (config.eval.*), for the model and the gray baseline.

With config.eval.inception_weights set, every eval batch's generated and gray photos (and, for the
eval split's own reference, the ground truth) are embedded by pytorch-fid's FID Inception
(colorgan.evaluation.inception: resized from the crop size to 299 on the device, as pytorch-fid
resizes), and `fid` and `kid` compare them with the reference: the eval split's ground truth, or
config.eval.fid_reference (a statistics .npz, e.g. of ImageNet val; KID needs one with features, as
`python -m colorgan.fid --save_stats` writes). With config.eval.lpips_weights set, `lpips` is the mean
LPIPS (AlexNet, v0.1) of each result against its ground truth. Features and distances come off the
devices replicated; statistics accumulate in float64 on the host
(colorgan.evaluation.feature_stats).

The gray baseline and the ground truth depend on the photos alone, so they are embedded at the first
evaluation only and their results reused by every later one.
"""

import dataclasses
import functools
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from colorgan import errors
from colorgan.evaluation import feature_stats
from colorgan.evaluation import inception
from colorgan.evaluation import lpips
from colorgan import parallel

EVAL_SPLIT_REFERENCE = "eval split ground truth"


def enabled(config: ml_collections.ConfigDict) -> bool:
  return bool(config.eval.inception_weights or config.eval.lpips_weights)


def off_message(config: ml_collections.ConfigDict) -> str | None:
  """The log line naming the keys that turn the metrics that are off on, or None when all are on."""
  off = []
  if not config.eval.inception_weights:
    off.append(
      "fid and kid: set config.eval.inception_weights to pytorch-fid's Inception as a .npz"
    )
  if not config.eval.lpips_weights:
    off.append("lpips: set config.eval.lpips_weights to the AlexNet LPIPS .npz")
  if not off:
    return None
  return "Evaluation without " + "; without ".join(off) + " (README: Metrics)"


def _load(key: str, path: str, loader):
  try:
    return loader(path)
  except (errors.WeightsError, errors.StatsError) as e:
    raise errors.ConfigError(f"config.eval.{key}: {e}") from None


def _batch_outputs(
  variables: dict[str, Any],
  truth: jax.Array,
  generated: jax.Array,
  gray: jax.Array,
  mask: jax.Array,
  *,
  embed_truth: bool,
  baseline: bool,
):
  """The features and distances of one eval batch (uint8 images [B, S, S, 3], mask [B])."""
  out = {"mask": mask}
  if "inception" in variables:
    embed = functools.partial(inception.features_of_uint8, variables["inception"])
    out["model_features"] = embed(generated)
    if baseline:
      out["baseline_features"] = embed(gray)
    if embed_truth:
      out["truth_features"] = embed(truth)
  if "lpips" in variables:
    out["model_lpips"] = lpips.distance_of_uint8(variables["lpips"], generated, truth)
    if baseline:
      out["baseline_lpips"] = lpips.distance_of_uint8(variables["lpips"], gray, truth)
  return out


@dataclasses.dataclass
class _Totals:
  """What one evaluation accumulates on the host (None: not computed this time)."""

  first: bool  # the gray baseline (and the eval split's ground truth) are embedded this time
  model: feature_stats.FeatureStats | None = None
  baseline: feature_stats.FeatureStats | None = None
  truth: feature_stats.FeatureStats | None = None
  lpips: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)


class FeatureMetrics:
  """The reference networks of one run, loaded and compiled once; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    """Loads config.eval.* (ConfigError naming the key when a file cannot be used)."""
    cfg = config.eval
    host = {}
    if cfg.inception_weights:
      host["inception"] = _load(
        "inception_weights", cfg.inception_weights, inception.load_variables
      )
    if cfg.lpips_weights:
      host["lpips"] = _load("lpips_weights", cfg.lpips_weights, lpips.load_variables)
    self._reference = (
      _load("fid_reference", cfg.fid_reference, feature_stats.load)
      if cfg.fid_reference and "inception" in host
      else None
    )
    if self._reference is not None and self._reference.mu.shape != (inception.FEATURES,):
      raise errors.ConfigError(
        f"config.eval.fid_reference: {cfg.fid_reference} holds statistics of "
        f"{self._reference.mu.size} features, not of the {inception.FEATURES} Inception pool "
        "features"
      )
    if self._reference is not None and self._reference.features is None:
      logging.warning(
        "config.eval.fid_reference=%s holds no features (pytorch-fid's format): kid "
        "is not computed",
        cfg.fid_reference,
      )
    self.reference_name = cfg.fid_reference or EVAL_SPLIT_REFERENCE
    self.mesh = mesh
    self._variables = jax.tree.map(lambda x: parallel.replicate(mesh, x), host)
    self._baseline_result: dict[str, float | None] | None = None
    self._programs = {}

  def _program(self, first: bool):
    """The jitted batch program; `first` also embeds the gray baseline (and the ground truth)."""
    if first not in self._programs:
      step = functools.partial(
        _batch_outputs, embed_truth=first and self._reference is None, baseline=first
      )
      batch = parallel.batch_sharding(self.mesh)
      self._programs[first] = jax.jit(
        step,
        in_shardings=(parallel.replicated(self.mesh), batch, batch, batch, batch),
        out_shardings=parallel.replicated(self.mesh),
      )
    return self._programs[first]

  def start(self) -> _Totals:
    first = self._baseline_result is None
    fresh = lambda on: feature_stats.FeatureStats(inception.FEATURES) if on else None  # noqa: E731
    has_inception = "inception" in self._variables
    return _Totals(
      first=first,
      model=fresh(has_inception),
      baseline=fresh(has_inception and first),
      truth=fresh(has_inception and first and self._reference is None),
    )

  def add(
    self, totals: _Totals, truth: jax.Array, generated: jax.Array, gray: jax.Array, mask: jax.Array
  ) -> None:
    """Accumulates one eval batch: global uint8 images [B, S, S, 3] and mask [B] (False: padding)."""
    out = jax.device_get(self._program(totals.first)(self._variables, truth, generated, gray, mask))
    keep = np.asarray(out["mask"], bool)
    for name in ("model", "baseline", "truth"):
      stats = getattr(totals, name)
      if stats is not None:
        stats.add(out[f"{name}_features"][keep])
    for name in ("model", "baseline"):
      if f"{name}_lpips" in out:
        totals.lpips.setdefault(name, []).append(out[f"{name}_lpips"][keep])

  def _scores(self, stats: feature_stats.FeatureStats | None, lpips_values, reference):
    result = {}
    if stats is not None:
      result.update(fid=None, kid=None)
      if stats.count >= 2 and reference is not None:
        summary = stats.summary()
        try:
          result["fid"] = feature_stats.fid(summary, reference)
        except ValueError as e:
          logging.warning("%s", e)
        if reference.features is not None and len(reference.features) >= 2:
          result["kid"] = feature_stats.kid(summary.features, reference.features)[0]
    if lpips_values is not None:
      values = np.concatenate(lpips_values)
      result["lpips"] = float(np.mean(values, dtype=np.float64)) if values.size else None
    return result

  def finish(self, totals: _Totals) -> dict[str, Any]:
    """{"model": {fid, kid, lpips}, "baseline": {...}, "fid_backend", "fid_reference"}.

    fid and kid are None below 2 images (and kid without reference features).
    """
    reference = self._reference
    if reference is None and totals.truth is not None and totals.truth.count >= 2:
      reference = self._reference = totals.truth.summary()
    if self._baseline_result is None:
      self._baseline_result = self._scores(totals.baseline, totals.lpips.get("baseline"), reference)
    result = {
      "model": self._scores(totals.model, totals.lpips.get("model"), reference),
      "baseline": dict(self._baseline_result),
    }
    if totals.model is not None:
      result.update(fid_backend=inception.BACKEND, fid_reference=self.reference_name)
    return result
