"""colorgan.evaluation.metrics against hand-computed values, skimage and dm-pix; accumulation and
masking."""

import math

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.metrics
import skimage.transform

from colorgan.evaluation import metrics

# Jitted once per shape: op-by-op execution compiles every primitive and is far slower.
image_metrics = jax.jit(metrics.image_metrics)
from_images = jax.jit(metrics.EvalMetrics.from_images)


@pytest.fixture(scope="module")
def photo_pair():
  """A real photo (uint8, 128 px) and a noisy, color-shifted version of it."""
  truth = skimage.transform.rescale(skimage.data.astronaut(), 0.25, channel_axis=-1)
  rng = np.random.default_rng(0)
  pred = np.clip(truth + rng.normal(0, 0.05, truth.shape) + [0.05, -0.03, 0.0], 0, 1)
  as_uint8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
  return as_uint8(pred), as_uint8(truth)


def test_colorfulness_hand_values():
  # One pure red pixel among four black ones: rg = (255, 0, 0, 0), yb = (127.5, 0, 0, 0), so
  # std = v * sqrt(3) / 4 and mean = v / 4 for each, and CF = |(255, 127.5)| * (sqrt(3) + 0.3) / 4.
  images = np.zeros((3, 2, 2, 3), np.uint8)
  images[0, 0, 0] = (255, 0, 0)
  images[1] = (255, 0, 0)  # all red: no spread, CF = 0.3 * |(255, 127.5)|
  images[2] = (90, 90, 90)  # gray: 0
  norm = math.hypot(255, 127.5)
  np.testing.assert_allclose(
    metrics.colorfulness(images), [norm * (math.sqrt(3) + 0.3) / 4, 0.3 * norm, 0.0], rtol=1e-5
  )


def test_colorfulness_on_a_photo_matches_the_papers_formula(photo_pair):
  rgb = photo_pair[1].astype(np.float64)
  rg = np.abs(rgb[..., 0] - rgb[..., 1])
  yb = np.abs(0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2])
  expected = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
  np.testing.assert_allclose(metrics.colorfulness(photo_pair[1][None]), [expected], rtol=1e-5)


def test_auc_hand_values():
  # Pixel errors 0, 5 (a 3-4-5 triangle), 150 and 200 Lab units. Of the 151 thresholds 0..150 they
  # meet 151, 146, 1 and 0: AuC = 298 / (4 * 151).
  true_ab = np.zeros((1, 2, 2, 2), np.float32)
  pred_ab = np.array([[[[0, 0], [3, 4]], [[0, 150], [-200, 0]]]], np.float32)
  np.testing.assert_allclose(metrics.ab_auc(pred_ab, true_ab), [298 / 604], rtol=1e-6)
  np.testing.assert_allclose(metrics.ab_auc(true_ab, true_ab), [1.0])
  # |da| + |db| over 8 values: (0 + 0 + 3 + 4 + 0 + 150 + 200 + 0) / 8.
  np.testing.assert_allclose(metrics.ab_l1(pred_ab, true_ab), [357 / 8], rtol=1e-6)


def test_auc_equals_the_threshold_sweep():
  rng = np.random.default_rng(1)
  pred_ab = rng.uniform(-120, 120, (2, 8, 8, 2)).astype(np.float32)
  true_ab = rng.uniform(-120, 120, (2, 8, 8, 2)).astype(np.float32)
  error = np.linalg.norm(pred_ab.astype(np.float64) - true_ab, axis=-1)
  sweep = np.mean([(error <= t).mean(axis=(1, 2)) for t in range(151)], axis=0)
  np.testing.assert_allclose(metrics.ab_auc(pred_ab, true_ab), sweep, atol=1e-6)


def test_psnr_and_ssim_hand_values():
  # Constant images 0.2 and 0.6 (uint8 51 and 153): MSE 0.16 -> PSNR 10 log10(1 / 0.16); no
  # variance, so SSIM is its luminance term (2 * 0.2 * 0.6 + C1) / (0.2^2 + 0.6^2 + C1), C1 = 1e-4.
  pred = np.full((1, 16, 16, 3), 51, np.uint8)
  true = np.full((1, 16, 16, 3), 153, np.uint8)
  values = image_metrics(pred, true)
  np.testing.assert_allclose(values["psnr"], [10 * math.log10(1 / 0.16)], rtol=1e-5)
  # (float32 variances of constant images are ~1e-8 instead of 0: 1e-4 of C2.)
  np.testing.assert_allclose(values["ssim"], [(0.24 + 1e-4) / (0.40 + 1e-4)], rtol=3e-4)
  assert float(values["colorfulness"][0]) == 0.0 and float(values["ab_l1"][0]) < 0.01


def test_photo_metrics_match_skimage_and_dm_pix(photo_pair):
  pred, true = photo_pair
  values = {k: float(v[0]) for k, v in image_metrics(pred[None], true[None]).items()}
  pred_f, true_f = pred / 255.0, true / 255.0
  np.testing.assert_allclose(
    values["psnr"], skimage.metrics.peak_signal_noise_ratio(true_f, pred_f, data_range=1), rtol=1e-5
  )
  np.testing.assert_allclose(
    values["ssim"],
    skimage.metrics.structural_similarity(
      true_f,
      pred_f,
      data_range=1,
      channel_axis=-1,
      gaussian_weights=True,
      sigma=1.5,
      use_sample_covariance=False,
    ),
    atol=1e-5,
  )
  as_f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  assert values["psnr"] == float(dm_pix.psnr(as_f32(pred_f), as_f32(true_f)))
  np.testing.assert_allclose(
    values["ssim"], float(dm_pix.ssim(as_f32(pred_f), as_f32(true_f))), rtol=1e-6
  )
  # ab error through skimage's Lab: the threshold sweep and the L1.
  error = skimage.color.rgb2lab(pred_f)[..., 1:] - skimage.color.rgb2lab(true_f)[..., 1:]
  l2 = np.linalg.norm(error, axis=-1)
  np.testing.assert_allclose(
    values["auc"], np.mean([(l2 <= t).mean() for t in range(151)]), atol=2e-3
  )
  np.testing.assert_allclose(values["ab_l1"], np.abs(error).mean(), rtol=1e-3)
  assert 0.5 < values["auc"] < 1.0 and 0.5 < values["ssim"] < 1.0


def test_collection_accumulates_over_batches_and_masks_padding(photo_pair):
  pred, true = photo_pair
  gray = np.repeat(np.mean(true, axis=-1, keepdims=True).astype(np.uint8), 3, axis=-1)
  # Three images: (pred vs true), (gray vs true), (true vs true), in two batches; the second batch
  # carries a padding row of noise that the mask must drop.
  noise = np.random.default_rng(2).integers(0, 256, true.shape, dtype=np.uint8)
  batch1 = (np.stack([pred, gray]), np.stack([true, true]))
  batch2 = (np.stack([true, noise]), np.stack([true, true]))
  merged = from_images(*batch1, jnp.array([True, True])).merge(
    from_images(*batch2, jnp.array([True, False]))
  )
  assert merged.num_images() == 3
  per_image = {
    k: np.concatenate([v, image_metrics(*batch2)[k][:1]]) for k, v in image_metrics(*batch1).items()
  }
  got = merged.compute()
  for name in ("ssim", "colorfulness", "auc", "ab_l1"):
    np.testing.assert_allclose(got[name], np.mean(per_image[name]), rtol=1e-5, err_msg=name)
  assert math.isinf(float(got["psnr"]))  # the exact copy: MSE 0
  # delta CF is |mean CF(pred) - mean CF(truth)|, not a mean of per-image gaps.
  expected_gap = abs(
    np.mean(per_image["colorfulness"]) - float(metrics.colorfulness(true[None])[0])
  )
  np.testing.assert_allclose(got["delta_colorfulness"], expected_gap, rtol=1e-5)
  assert float(per_image["colorfulness"][1]) < 0.01  # the gray image has none


def test_colorfulness_gap_hand_values():
  gap = metrics.ColorfulnessGap.from_model_output(
    colorfulness=jnp.array([10.0, 30.0, 99.0]),
    true_colorfulness=jnp.array([40.0, 20.0, 0.0]),
    mask=jnp.array([True, True, False]),
  )
  gap = gap.merge(
    metrics.ColorfulnessGap.from_model_output(
      colorfulness=jnp.array([5.0]), true_colorfulness=jnp.array([15.0])
    )
  )
  # pred mean 15, truth mean 25.
  np.testing.assert_allclose(gap.compute(), 10.0)
