"""The classification head (config.model.ab_head="classification"; Zhang et al. 2016) against numpy
references, and its vividness (the annealed mean's temperature) end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorgan import color
from colorgan.inference import colorize
from colorgan.inference import export
from colorgan.inference import photo
from colorgan.inference import runtimes
from colorgan.models import ab_bins
from colorgan.models import vividness
from colorgan.training import losses
from tests.conftest import tiny_config


def _softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def test_the_bins_are_the_in_gamut_cells_of_a_grid_of_10():
  centers = ab_bins.centers()
  assert centers.shape == (261, 2)
  assert np.all(centers % 10 == 0) and np.all(np.abs(centers) <= 110)
  assert len(np.unique(centers, axis=0)) == len(centers)
  # Every 8-bit color's ab (skimage's Lab: an independent conversion) falls in a bin: random colors
  # and the cube's corners (the gamut's extremes).
  import skimage.color  # pylint: disable=g-import-not-at-top

  rgb = np.random.default_rng(0).integers(0, 256, (4000, 3))
  corners = np.array(np.meshgrid(*[[0, 255]] * 3)).reshape(3, -1).T
  ab = skimage.color.rgb2lab(np.concatenate([rgb, corners])[None] / 255.0)[0, :, 1:]
  distance = np.abs(ab[:, None] - centers[None]).max(axis=-1).min(axis=-1)
  assert distance.max() <= 5.0 + 1e-3


def test_decode_at_t1_is_the_mean_of_the_bin_centers_under_the_softmax():
  logits = np.random.default_rng(0).normal(0, 2, (2, 3, len(ab_bins.centers()))).astype(np.float32)
  want = _softmax(logits) @ ab_bins.centers() / 110.0
  np.testing.assert_allclose(ab_bins.decode(jnp.asarray(logits)), want, rtol=1e-5, atol=1e-6)
  # Colder: the annealed mean moves toward the mode.
  cold = np.asarray(ab_bins.decode(jnp.asarray(logits), 0.2))
  np.testing.assert_allclose(cold, _softmax(logits / 0.2) @ ab_bins.centers() / 110.0, atol=1e-5)
  mode = ab_bins.centers()[np.argmax(logits, axis=-1)] / 110.0
  assert np.abs(cold - mode).mean() < np.abs(want - mode).mean()


def test_soft_encoding_spreads_each_color_over_its_five_nearest_bins():
  ab = np.array([[3.3, -7.1], [-37.7, 24.9]], np.float32)  # no ties around the fifth nearest
  targets, nearest = (np.asarray(x) for x in ab_bins.soft_encode(jnp.asarray(ab)))
  centers = ab_bins.centers()
  for row, target, near in zip(ab, targets, nearest):
    d2 = np.sum((centers - row) ** 2, axis=-1)
    five = np.argsort(d2)[:5]
    want = np.zeros(len(centers))
    want[five] = np.exp(-d2[five] / (2 * 5.0**2))
    np.testing.assert_allclose(target, want / want.sum(), atol=1e-6)
    assert near == np.argmin(d2)


def test_rebalancing_weights_average_one_under_the_prior():
  counts = np.random.default_rng(1).integers(0, 1000, len(ab_bins.centers()))
  prior = ab_bins.smoothed_prior(counts)
  assert prior.sum() == pytest.approx(1.0) and np.all(prior > 0)
  for mix in (0.0, 0.5, 1.0):
    w = ab_bins.rebalancing_weights(prior, mix)
    assert np.sum(prior * w) == pytest.approx(1.0, rel=1e-5)
  w = ab_bins.rebalancing_weights(prior, 0.5)
  assert w[np.argmax(prior)] == w.min() and w[np.argmin(prior)] == w.max()  # rare colors up
  np.testing.assert_allclose(ab_bins.rebalancing_weights(prior, 1.0), 1.0, rtol=1e-5)


def test_the_rebalanced_cross_entropy_against_numpy():
  rng = np.random.default_rng(2)
  q = len(ab_bins.centers())
  logits = rng.normal(0, 1, (1, 2, 2, q)).astype(np.float32)
  real_ab_lab = rng.uniform(-60, 60, (1, 2, 2, 2)).astype(np.float32)
  weights = rng.uniform(0.5, 2.0, q).astype(np.float32)
  got = losses.classification(
    jnp.asarray(logits), color.scale_ab(jnp.asarray(real_ab_lab)), jnp.asarray(weights)
  )
  targets, nearest = (np.asarray(x) for x in ab_bins.soft_encode(jnp.asarray(real_ab_lab)))
  log_p = np.log(_softmax(logits.astype(np.float64)))
  want = np.mean(weights[nearest] * -np.sum(targets * log_p, axis=-1))
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
  """A 4-step tiny run with the classification head, its vividness calibrated."""
  from colorgan.training import loop  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path_factory.mktemp("classification") / "run")
  state = loop.train_and_evaluate(
    tiny_config(
      **{
        "total_steps": 4,
        "eval_every_steps": 0,
        "num_samples": 1,
        "model.ab_head": "classification",
        "loss.reconstruction": "l2",
        "loss.class_prior_batches": 2,
        "vividness.calibrate": True,
      }
    ),
    workdir,
  )
  return workdir, state


def test_the_run_keeps_its_rebalancing_weights_and_calibrates_the_temperature(class_run):
  workdir, state = class_run
  weights = np.asarray(state.ab_class_weights)
  assert weights.shape == (261,) and not np.allclose(weights, 1.0)
  cal = vividness.read(workdir)
  assert cal.method == "temperature" and (cal.low, cal.high) == (1.0, 0.2)
  setting = vividness.resolve(workdir, 0.5)
  assert setting.temperature == pytest.approx(0.6) and setting.chroma_gain == 1.0


def test_export_at_a_vividness_matches_colorize_at_it(class_run, tmp_path):
  workdir, _ = class_run
  setting = vividness.resolve(workdir, 1.0)
  rgb = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
  one = photo.Photo(photo.lightness(rgb), None)
  colorizer = colorize.Colorizer.from_checkpoint(workdir, setting=setting, batch_size=1)
  want = colorizer.colorize_photo(one)
  mean = colorizer.colorize_photo(one, temperature=1.0)
  assert not np.array_equal(want, mean)  # T = 0.2 is not the mean
  from colorgan import checkpointing  # pylint: disable=g-import-not-at-top

  inference = checkpointing.restore_for_inference(workdir)
  output = str(tmp_path / "class.onnx")
  info = export.export(
    inference.config,
    jax.device_get(inference.g_variables),
    step=inference.step,
    fmt="onnx",
    output=output,
    vividness=setting,
  )
  assert info["vividness"] == 1.0 and info["temperature"] == pytest.approx(0.2)
  difference = np.abs(runtimes.runner("onnx", output)(rgb).astype(int) - want.astype(int)).max(-1)
  assert np.mean(difference <= 1) >= 0.999 and difference.max() <= 8
