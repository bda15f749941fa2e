"""The recipe study's losses (colourfulness, feature matching) and the vividness knob, against numpy
references and against what colorize, evaluate and export do at a vividness."""

import functools
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorgan import color
from colorgan import configuration
from colorgan import errors
from colorgan import models
from colorgan import parallel
from colorgan.evaluation import calibration
from colorgan.evaluation import evaluator
from colorgan.evaluation import metrics
from colorgan.inference import colorize
from colorgan.inference import export
from colorgan.inference import runtimes
from colorgan.inference import photo
from colorgan.models import vividness
from colorgan.training import losses
from colorgan.training import step as step_lib
from tests.conftest import run_module
from tests.conftest import tiny_config


# ----------------------------------------------------------------------------- numpy references
def _np_colorfulness(rgb, ddof=0):
  """Hasler & Suesstrunk on [0, 1] RGB, one image [H, W, 3], as their paper's code."""
  r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
  rg, yb = np.abs(r - g), np.abs(0.5 * (r + g) - b)
  std = np.sqrt(rg.std(ddof=ddof) ** 2 + yb.std(ddof=ddof) ** 2)
  return std + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)


@pytest.fixture(scope="module")
def rgb_pair():
  rng = np.random.default_rng(0)
  pred = rng.uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
  true = rng.uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
  true[0] = true[0].mean(axis=-1, keepdims=True)  # a gray photo: CF 0
  return pred, true


def test_colorfulness_is_the_metric_on_unit_rgb(rgb_pair):
  pred, _ = rgb_pair
  colorfulness = functools.partial(color.colorfulness, eps=losses.COLORFULNESS_EPS)  # the losses'
  got = np.asarray(colorfulness(jnp.asarray(pred)))
  np.testing.assert_allclose(got, [_np_colorfulness(p) for p in pred], rtol=1e-5, atol=1e-5)
  as_uint8 = np.round(pred * 255).astype(np.uint8)
  np.testing.assert_allclose(
    255 * np.asarray(colorfulness(jnp.asarray(as_uint8, jnp.float32) / 255)),
    metrics.colorfulness(as_uint8),
    rtol=1e-4,
  )


def test_colorfulness_losses_against_numpy(rgb_pair):
  pred, true = rgb_pair
  cf_pred = np.array([_np_colorfulness(p) for p in pred])
  cf_true = np.array([_np_colorfulness(t) for t in true])
  margin = 0.05
  want = {
    "match": np.mean(np.maximum(np.abs(cf_pred - cf_true) - margin, 0)),
    "hinge": np.mean(np.maximum(cf_true - cf_pred - margin, 0)),
    # DDColor: sum over the batch of (1 - CF), torch.std's unbiased deviations; no margin.
    "ddcolor": np.sum(1 - np.array([_np_colorfulness(p, ddof=1) for p in pred])),
  }
  assert set(want) == set(losses.COLORFULNESS_LOSSES)
  for name, value in want.items():
    got = losses.COLORFULNESS_LOSSES[name](jnp.asarray(pred), jnp.asarray(true), margin=margin)
    np.testing.assert_allclose(got, value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_colorfulness_loss_has_finite_gradients_on_gray_and_pushes_toward_the_photo(rgb_pair):
  _, true = rgb_pair
  gray = jnp.full((1, 8, 8, 3), 0.5)
  grads = jax.grad(lambda x: losses.colorfulness_match(x, jnp.asarray(true[1:2]), margin=0.0))(gray)
  assert np.all(np.isfinite(grads))
  # A step against the gradient from a dull version of the photo makes it more colourful.
  dull = jnp.asarray(0.5 + 0.2 * (true[1:2] - 0.5))
  loss = lambda x: losses.colorfulness_match(x, jnp.asarray(true[1:2]), margin=0.0)  # noqa: E731
  stepped = dull - 0.5 * jax.grad(loss)(dull)
  assert loss(stepped) < loss(dull)


def test_feature_matching_against_numpy():
  rng = np.random.default_rng(1)
  real = [rng.normal(size=(2, 4, 4, c)).astype(np.float32) for c in (3, 5)]
  fake = [rng.normal(size=(2, 4, 4, c)).astype(np.float32) for c in (3, 5)]
  want = np.mean([np.mean(np.abs(f - r)) for r, f in zip(real, fake)])
  np.testing.assert_allclose(losses.feature_matching(real, fake), want, rtol=1e-6)
  # The real features are the target: no gradient reaches them.
  grad_real = jax.grad(lambda r: losses.feature_matching([r], [jnp.asarray(fake[0])]))(
    jnp.asarray(real[0])
  )
  assert not np.any(grad_real)


def test_a_step_adds_each_new_term_with_its_weight():
  config = tiny_config(
    **{
      "loss.colorfulness": "match",
      "loss.colorfulness_weight": 3.0,
      "loss.feature_matching_weight": 10.0,
    }
  )
  configuration.validate(config)
  mesh = parallel.create_mesh()
  g, d = models.create_generator(config), models.create_discriminator(config)
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  with jax.set_mesh(mesh):
    state = step_lib.init_train_state(config, g, d, mesh)
    _, m = step_lib.make_train_step(config, g, d, mesh)(
      state, parallel.global_batch(mesh, {"image": images})
    )
  m = {k: float(v) for k, v in m.compute().items()}
  assert m["g_colorfulness"] > 0 and m["g_feature_matching"] > 0
  total = (
    m["g_adv_weighted"]
    + m["g_recon_weighted"]
    + 3.0 * m["g_colorfulness"]
    + 10.0 * m["g_feature_matching"]
  )
  np.testing.assert_allclose(m["g_loss"], total, rtol=1e-5)


@pytest.mark.parametrize(
  "overrides, key",
  [
    ({"loss.colorfulness": "vivid"}, "loss.colorfulness"),
    ({"loss.colorfulness_weight": -1.0}, "loss.colorfulness_weight"),
    ({"loss.gan": "none", "loss.feature_matching_weight": 10.0}, "feature_matching_weight"),
    ({"vividness.grid_points": 1}, "vividness.grid_points"),
    ({"vividness.colorfulness_share": -0.5}, "vividness.colorfulness_share"),
    ({"precise_bn_batches": -1}, "precise_bn_batches"),
  ],
)
def test_config_mistakes_name_the_key(overrides, key):
  with pytest.raises(errors.ConfigError, match=key):
    configuration.validate(tiny_config(**overrides))


# ----------------------------------------------------------------------------- the calibration
def _photos_and_lab(n=4, size=32):
  """Bundled photos (natural colours) at size x size, and their model-scale L and ab."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from colorgan.data import sources  # pylint: disable=g-import-not-at-top

  photos = np.stack(
    [
      np.asarray(Image.open(p).convert("RGB").resize((size, size)))
      for p in sources.bundled_photo_paths()[:n]
    ]
  )
  l, ab = (np.asarray(x) for x in color.rgb_uint8_to_model_lab(photos))
  return photos, l, ab


def test_gain_ends_least_squares_and_the_photos_colorfulness():
  photos, l, true_ab = _photos_and_lab()
  # Half of each photo's colors and a share of another's: a dull, partly wrong colorizer.
  pred_ab = 0.5 * true_ab + 0.3 * true_ab[::-1]
  low, high = calibration.gain_ends(l, pred_ab, photos)
  gains = np.linspace(0, 4, 4001)  # the least squared ab error, by brute force
  assert (
    abs(low - gains[int(np.argmin([np.sum((g * pred_ab - true_ab) ** 2) for g in gains]))]) < 2e-3
  )
  scores = lambda gain: calibration.image_scores(l, pred_ab, photos, gain)  # noqa: E731
  target = np.mean(scores(1.0)["true_colorfulness"])
  assert np.mean(scores(low)["colorfulness"]) < 0.9 * target  # duller than the photos there
  assert high > low and np.mean(scores(high)["colorfulness"]) == pytest.approx(target, rel=1e-3)


def test_the_default_is_the_most_vivid_within_the_psnr_tolerance():
  photos, l, true_ab = _photos_and_lab()
  pred_ab = 0.5 * true_ab + 0.3 * true_ab[::-1]
  cal, table = calibration.choose(l, pred_ab, photos, grid_points=11, psnr_tolerance=0.2)
  assert [row["vividness"] for row in table] == pytest.approx(np.linspace(0, 1, 11))
  within = [row["vividness"] for row in table if row["psnr"] >= table[0]["psnr"] - 0.2]
  assert cal.default == max(within) and cal.method == "chroma_gain"
  for row in table:
    assert row["chroma_gain"] == pytest.approx(cal.chroma_gain(row["vividness"]))


def test_a_colourfulness_share_makes_the_default_the_first_v_that_reaches_it():
  photos, l, true_ab = _photos_and_lab()
  pred_ab = 0.5 * true_ab + 0.3 * true_ab[::-1]
  cal, table = calibration.choose(l, pred_ab, photos, grid_points=11, colorfulness_share=0.95)
  reached = [r["vividness"] for r in table if r["colorfulness"] >= 0.95 * r["true_colorfulness"]]
  assert 0 < cal.default == min(reached) < 1 and "0.95 of theirs" in cal.rule
  assert table[0]["colorfulness"] < 0.95 * table[0]["true_colorfulness"]  # v=0 falls short
  unreachable, _ = calibration.choose(l, pred_ab, photos, grid_points=11, colorfulness_share=2.0)
  assert unreachable.default == 1.0  # v=1 matches the photos: the most a share can ask


# ----------------------------------------------------------------------------- a calibrated run
@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory, tiny_run):
  """conftest's 1-step tiny run, copied, calibrated as the end of training calibrates a run with
  config.vividness.calibrate=True (the loop's call is tested in test_phases and
  test_classification), and the log lines."""
  import shutil  # pylint: disable=g-import-not-at-top
  from colorgan import checkpointing  # pylint: disable=g-import-not-at-top
  from colorgan.data import sources  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path_factory.mktemp("vivid") / "run")
  shutil.copytree(tiny_run, workdir)
  config = tiny_config(total_steps=1, eval_every_steps=0, num_samples=1)
  variables = checkpointing.restore_for_inference(workdir).g_variables
  handler, logger = _Collect(), logging.getLogger("absl")
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    calibration.calibrate_run(config, variables, sources.create_source(config).eval, workdir)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  return workdir, handler.lines


class _Collect(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


def test_the_calibration_saves_the_default_vividness_and_says_it(calibrated_run):
  workdir, lines = calibrated_run
  cal = vividness.read(workdir)
  saved = json.load(open(os.path.join(workdir, vividness.FILE)))
  assert cal.default == saved["default"] and 0 <= cal.default <= 1
  assert len(saved["table"]) == tiny_config().vividness.grid_points
  said = [line for line in lines if line.startswith("Vividness: default v=")]
  assert said and f"v={cal.default:.2f}" in said[0]


def test_evaluate_at_a_vividness_scores_the_calibration_table_and_keeps_the_record(calibrated_run):
  workdir, _ = calibrated_run
  saved = json.load(open(os.path.join(workdir, vividness.FILE)))
  row = saved["table"][-1]  # v = 1
  config = tiny_config(total_steps=1, num_eval_images=0)  # every eval photo, as calibrated
  result = evaluator.evaluate_checkpoint(config, workdir, vividness=1.0)
  assert result["vividness"] == 1.0
  assert result["chroma_gain"] == pytest.approx(row["chroma_gain"])
  np.testing.assert_allclose(result["model"]["psnr"], row["psnr"], rtol=1e-5)
  np.testing.assert_allclose(result["model"]["colorfulness"], row["colorfulness"], rtol=1e-4)
  assert os.path.isfile(os.path.join(workdir, "eval", "vividness_1", "step_1.json"))
  assert not os.path.exists(os.path.join(workdir, "eval", "step_1.json"))


def test_export_at_a_vividness_matches_colorize_at_it(calibrated_run, tmp_path):
  workdir, _ = calibrated_run
  from colorgan import checkpointing  # pylint: disable=g-import-not-at-top

  inference = checkpointing.restore_for_inference(workdir)
  variables = jax.tree.map(np.asarray, inference.g_variables)
  variables["params"]["up0"]["kernel"] = variables["params"]["up0"]["kernel"] * 30.0
  setting = vividness.resolve(workdir, 0.8)
  gain = setting.chroma_gain
  assert setting.v == 0.8 and setting.alpha is None
  assert gain == pytest.approx(vividness.read(workdir).chroma_gain(0.8))
  rgb = np.random.default_rng(4).integers(0, 256, (40, 48, 3), dtype=np.uint8)
  colorizer = colorize.Colorizer(
    inference.config, variables, step=1, batch_size=1, chroma_gain=gain
  )
  want = colorizer.colorize_photo(photo.Photo(photo.lightness(rgb), None))
  plain = colorize.Colorizer(inference.config, variables, step=1, batch_size=1)
  assert not np.array_equal(want, plain.colorize_photo(photo.Photo(photo.lightness(rgb), None)))
  output = str(tmp_path / "vivid.onnx")
  info = export.export(
    inference.config, variables, step=1, fmt="onnx", output=output, vividness=setting
  )
  assert info["vividness"] == 0.8 and info["chroma_gain"] == gain
  got = runtimes.runner("onnx", output)(rgb)
  difference = np.abs(got.astype(int) - want.astype(int)).max(axis=-1)
  assert np.mean(difference <= 1) >= 0.999 and difference.max() <= 8


# ----------------------------------------------------------------------------- the file and the flag
def test_the_calibration_file_reads_back_and_a_broken_one_is_named(tmp_path):
  cal = vividness.Calibration("chroma_gain", 1.05, 1.6, 0.35, "rule")
  vividness.write(str(tmp_path), cal, [{"vividness": 0.0}])
  assert vividness.read(str(tmp_path)) == cal
  assert vividness.resolve(str(tmp_path), None) == vividness.Setting(
    0.35, pytest.approx(cal.chroma_gain(0.35))
  )
  (tmp_path / vividness.FILE).write_text('{"method": "chroma_gain"')
  with pytest.raises(errors.ConfigError, match=vividness.FILE):
    vividness.read(str(tmp_path))
  assert vividness.resolve(str(tmp_path / "none"), None) == vividness.Setting(None)
  with pytest.raises(errors.UsageError, match="train with --config.vividness.calibrate=True"):
    vividness.resolve(str(tmp_path / "none"), 0.5)


def _cli(*args):
  return run_module("colorgan.main", *args)


@pytest.mark.parametrize(
  "args, message",
  [
    (("--mode=colorize", "--vividness=1.5"), "--vividness=1.5 is out of range"),
    (("--mode=evaluate", "--vividness=-0.1"), "--vividness=-0.1 is out of range"),
    (
      ("--mode=train", "--config=configs/default.py:smoke", "--vividness=0.5"),
      "--vividness is for --mode=colorize",
    ),
    (("--mode=export", "--format=onnx", "--output=x.onnx", "--vividness=0.5"), "vividness.json"),
  ],
)
def test_vividness_mistakes_are_one_line(tiny_run, args, message):
  result = _cli(f"--workdir={tiny_run}", *args)  # tiny_run has no calibration
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("colorgan: error:")]
  assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr


def test_the_page_has_a_vividness_slider_that_colorizes_at_it(calibrated_run, tmp_path):
  gr = pytest.importorskip("gradio")
  from colorgan.inference import page as page_lib  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  workdir, _ = calibrated_run
  cal = vividness.read(workdir)
  colorizer = colorize.Colorizer.from_checkpoint(
    workdir, batch_size=1, chroma_gain=cal.chroma_gain(cal.default)
  )
  page = page_lib.Page(colorizer, str(tmp_path), calibration=cal)
  sliders = [b for b in page_lib.build(page, []).blocks.values() if isinstance(b, gr.Slider)]
  (slider,) = [s for s in sliders if s.elem_id == "vividness"]
  assert slider.visible and slider.value == cal.default
  rgb = np.random.default_rng(5).integers(0, 256, (24, 40, 3), dtype=np.uint8)
  path = str(tmp_path / "photo.png")
  for v in (0.0, 1.0):
    Image.fromarray(rgb).save(path)
    got = page.colorize_file(path, v)[0]
    want = colorizer.colorize_photo(
      photo.Photo(photo.lightness(rgb), None), None, cal.chroma_gain(v)
    )
    np.testing.assert_array_equal(got, want)
  Image.fromarray(rgb).save(path)
  np.testing.assert_array_equal(  # no slider value (the API's call): the run's default
    page.colorize_file(path)[0], colorizer.colorize_photo(photo.Photo(photo.lightness(rgb), None))
  )
  # A run without a calibration: no slider.
  plain = page_lib.Page(colorizer, str(tmp_path))
  (slider,) = [
    b for b in page_lib.build(plain, []).blocks.values() if getattr(b, "elem_id", "") == "vividness"
  ]
  assert not slider.visible
