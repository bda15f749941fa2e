"""Colorization metrics on uint8 RGB results against the ground truth, as clu metrics.

Per image (jax.numpy, jit-able, any batch size):
  psnr, ssim     dm-pix on RGB in [0, 1] (SSIM: 11x11 Gaussian window, sigma 1.5, averaged over RGB).
  colorfulness   Hasler & Suesstrunk (2003) on RGB in [0, 255]: rg = |R - G|, yb = |(R + G) / 2 - B|,
                 CF = sqrt(std_rg^2 + std_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2).
  auc            Zhang et al. (2016): the fraction of pixels whose ab error (L2 in Lab units) is <= t,
                 averaged over the thresholds t = 0, 1, ..., 150 (1.0: every pixel exact).
  ab_l1          mean |a - a'| and |b - b'| in Lab units.
Over a data set: each is averaged over images, and
delta_colorfulness = |mean CF(pred) - mean CF(truth)|.

`EvalMetrics` accumulates them: build one per batch with `EvalMetrics.single_from_model_output(
**image_metrics(pred, truth), mask=mask)` (padding rows have mask False and count nowhere) and `merge`
the batches. Inside `jax.jit` over a sharded batch the sums run over every device's rows, so the result
is the global one for any device count.
"""

import flax.struct
from clu import metrics as clu_metrics
import dm_pix
import jax.numpy as jnp

from colorgan import color

AUC_MAX_THRESHOLD = 150  # Lab units: Zhang et al.'s sweep, t = 0..150
# What evaluation reports for the model and the gray baseline (colorgan.evaluation.evaluator); with
# the reference networks of config.eval.* also FEATURE_METRIC_NAMES (colorgan.evaluation.features).
METRIC_NAMES = ("psnr", "ssim", "colorfulness", "delta_colorfulness", "auc", "ab_l1")
FEATURE_METRIC_NAMES = ("fid", "kid", "lpips")


def colorfulness(rgb_uint8) -> jnp.ndarray:
  """Hasler & Suesstrunk colorfulness of each image on [0, 255] (color.colorfulness).
  rgb_uint8: [B, H, W, 3] -> [B]."""
  return color.colorfulness(jnp.asarray(rgb_uint8, jnp.float32))


def ab_auc(pred_ab, true_ab, max_threshold: int = AUC_MAX_THRESHOLD) -> jnp.ndarray:
  """Area under the cumulative curve of per-pixel ab errors. ab: [B, H, W, 2] in Lab units -> [B].

  The fraction of pixels with error <= t averaged over t = 0..max_threshold equals, pixel by pixel,
  the count of thresholds at or above the pixel's error, max(0, max_threshold + 1 - ceil(error)),
  over max_threshold + 1: no [pixels, thresholds] array is needed.
  """
  error = jnp.sqrt(jnp.sum(jnp.square(pred_ab - true_ab), axis=-1))
  thresholds_met = jnp.clip(max_threshold + 1 - jnp.ceil(error), 0, max_threshold + 1)
  return jnp.mean(thresholds_met, axis=(-2, -1)) / (max_threshold + 1)


def ab_l1(pred_ab, true_ab) -> jnp.ndarray:
  """Mean absolute ab difference of each image. ab: [B, H, W, 2] in Lab units -> [B]."""
  return jnp.mean(jnp.abs(pred_ab - true_ab), axis=(-3, -2, -1))


def image_metrics(pred_uint8, true_uint8) -> dict[str, jnp.ndarray]:
  """Every per-image metric of a batch.

  pred_uint8, true_uint8: [B, H, W, 3] uint8 RGB -> {name: [B]}.
  """
  pred = jnp.asarray(pred_uint8, jnp.float32) / 255.0
  true = jnp.asarray(true_uint8, jnp.float32) / 255.0
  pred_ab = color.rgb_to_lab(pred)[..., 1:]
  true_ab = color.rgb_to_lab(true)[..., 1:]
  return {
    "psnr": dm_pix.psnr(pred, true),
    "ssim": dm_pix.ssim(pred, true),
    "colorfulness": colorfulness(pred_uint8),
    "true_colorfulness": colorfulness(true_uint8),
    "auc": ab_auc(pred_ab, true_ab),
    "ab_l1": ab_l1(pred_ab, true_ab),
  }


@flax.struct.dataclass
class ColorfulnessGap(clu_metrics.Metric):
  """delta CF = |mean CF(pred) - mean CF(truth)| over the images seen (not a mean of per-image gaps)."""

  pred_total: jnp.ndarray
  true_total: jnp.ndarray
  count: jnp.ndarray

  @classmethod
  def empty(cls) -> "ColorfulnessGap":
    zero = jnp.array(0, jnp.float32)
    return cls(pred_total=zero, true_total=zero, count=jnp.array(0, jnp.int32))

  @classmethod
  def from_model_output(
    cls,
    *,
    colorfulness: jnp.ndarray,
    true_colorfulness: jnp.ndarray,  # pylint: disable=redefined-outer-name
    mask: jnp.ndarray | None = None,
    **_,
  ) -> "ColorfulnessGap":
    if mask is None:
      mask = jnp.ones(colorfulness.shape[:1], bool)
    return cls(
      pred_total=jnp.sum(jnp.where(mask, colorfulness, 0.0)),
      true_total=jnp.sum(jnp.where(mask, true_colorfulness, 0.0)),
      count=jnp.sum(mask.astype(jnp.int32)),
    )

  def merge(self, other: "ColorfulnessGap") -> "ColorfulnessGap":
    return type(self)(
      pred_total=self.pred_total + other.pred_total,
      true_total=self.true_total + other.true_total,
      count=self.count + other.count,
    )

  def compute(self) -> jnp.ndarray:
    return jnp.abs(self.pred_total - self.true_total) / self.count


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  """Averages over images (masked padding excluded); see the module docstring."""

  psnr: clu_metrics.Average.from_output("psnr")
  ssim: clu_metrics.Average.from_output("ssim")
  colorfulness: clu_metrics.Average.from_output("colorfulness")
  true_colorfulness: clu_metrics.Average.from_output("true_colorfulness")
  delta_colorfulness: ColorfulnessGap
  auc: clu_metrics.Average.from_output("auc")
  ab_l1: clu_metrics.Average.from_output("ab_l1")

  @classmethod
  def from_images(cls, pred_uint8, true_uint8, mask=None) -> "EvalMetrics":
    """The metrics of one batch; mask [B] bool (False: padding)."""
    return cls.single_from_model_output(**image_metrics(pred_uint8, true_uint8), mask=mask)

  def num_images(self) -> int:
    return int(self.psnr.count)
