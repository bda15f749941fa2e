"""Recipes: schedules, TTUR, clipping, EMA, every adversarial loss, L1 pretraining -> GAN, D warm-up."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from colorgan import checkpointing
from colorgan import configuration
from colorgan import errors
from colorgan.evaluation import evaluator
from colorgan.data import pipeline
from colorgan.data import sources
from colorgan.training import losses
from colorgan.evaluation import metrics
from colorgan import models
from colorgan import parallel
from colorgan.training import schedules
from colorgan.training import loop
from colorgan.training import samples
from colorgan.training import specs
from colorgan.training import step as step_lib
from colorgan.training import warm_start
from tests.conftest import tiny_config


def _host(tree):
  """numpy leaves (PRNG keys as their key data) for bit-exact comparisons."""
  as_data = lambda x: (
    jax.random.key_data(x)  # noqa: E731
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    else x
  )
  return jax.tree.map(lambda x: np.asarray(as_data(x)), jax.device_get(tree))


def _differ(a, b) -> bool:
  """Every leaf that init draws at random differs (zero-initialized biases are equal anyway)."""
  return all(
    not np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(_host(a)), jax.tree.leaves(_host(b)))
    if np.any(x)
  )


def _assert_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(_host(a)), jax.tree.leaves(_host(b))):
    np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------- schedules
def _values(name, steps, base=1.0, **kwargs):
  schedule = schedules.create_schedule(name, base, **kwargs)
  eager = [float(schedule(s)) for s in steps]
  traced = [float(v) for v in jax.jit(jax.vmap(schedule))(jnp.asarray(steps))]
  np.testing.assert_allclose(traced, eager, rtol=1e-6)
  return eager


def test_constant_schedule():
  np.testing.assert_allclose(_values("constant", [0, 5, 99], 2e-4, total_steps=100), [2e-4] * 3)


def test_linear_decay_to_zero_over_the_last_decay_steps():
  # pix2pix: constant, then lr * (total - s) / decay_steps over the last decay_steps.
  got = _values("linear_decay", [0, 60, 61, 80, 99, 100], total_steps=100, decay_steps=40)
  np.testing.assert_allclose(got, [1.0, 1.0, 39 / 40, 0.5, 1 / 40, 0.0], rtol=1e-6)
  # decay_steps=0: the second half of the run (pix2pix's 100 + 100 epochs).
  got = _values("linear_decay", [0, 50, 75, 99], 2e-4, total_steps=100)
  np.testing.assert_allclose(got, [2e-4, 2e-4, 1e-4, 4e-6], rtol=1e-5)


def test_cosine_schedule():
  got = _values("cosine", [0, 25, 50, 75, 100], total_steps=100)
  # 0.5 * (1 + cos(pi * s / 100)): cos(pi / 4) = 0.70710678.
  np.testing.assert_allclose(got, [1.0, 0.85355339, 0.5, 0.14644661, 0.0], rtol=1e-5, atol=1e-7)


def test_warmup_multiplies_any_schedule():
  got = _values("constant", [0, 1, 2, 3, 4, 50], total_steps=100, warmup_steps=4)
  np.testing.assert_allclose(got, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0], rtol=1e-6)
  # Cosine after a 10-step warm-up: the cosine runs over steps 10..100.
  got = _values("cosine", [0, 4, 9, 10, 55, 100], total_steps=100, warmup_steps=10)
  np.testing.assert_allclose(got, [0.1, 0.5, 1.0, 1.0, 0.5, 0.0], rtol=1e-5, atol=1e-7)


def test_gradient_clipping_scales_the_gradient_adam_sees():
  grad = {"w": jnp.array([3.0, 4.0, 0.0])}  # global norm 5
  for clip, seen in ((0.0, [3.0, 4.0, 0.0]), (0.5, [0.3, 0.4, 0.0])):
    config = tiny_config(**{"optim.clip_grad_norm": clip})
    g_tx, _ = specs.create_optimizers(config)
    _, opt_state = g_tx.update(grad, g_tx.init({"w": jnp.zeros(3)}), {"w": jnp.zeros(3)})
    # Adam's first moment after one update: (1 - b1) * gradient, b1 = 0.5.
    np.testing.assert_allclose(
      optax.tree.get(opt_state, "mu")["w"], 0.5 * np.array(seen), rtol=1e-6
    )


# ----------------------------------------------------------------------------- the GAN step
BATCH = np.random.RandomState(0).randint(0, 256, (4, 32, 32, 3)).astype(np.uint8)
EMA = 0.5  # large, so each step moves the average visibly


def _recipe_config(gan: str):
  # TTUR (D's rate 4x G's), a 4-step warm-up, a schedule each, clipping, and an EMA of G.
  return tiny_config(
    **{
      "loss.gan": gan,
      "total_steps": 100,
      "optim.g_learning_rate": 2e-3,
      "optim.d_learning_rate": 8e-3,
      "optim.warmup_steps": 4,
      "optim.g_schedule": "cosine",
      "optim.d_schedule": "linear_decay",
      "optim.clip_grad_norm": 1.0,
      "g_ema_decay": EMA,
    }
  )


@pytest.fixture(scope="module")
def recipe():
  config = _recipe_config("vanilla")
  configuration.validate(config)
  mesh = parallel.create_mesh()
  generator, discriminator = models.create_generator(config), models.create_discriminator(config)
  # The state's structure is the same for every objective: one compiled initializer serves them all.
  init = jax.jit(
    functools.partial(step_lib.create_train_state, config, generator, discriminator),
    out_shardings=parallel.replicated(mesh),
  )
  return mesh, generator, discriminator, init


@pytest.mark.parametrize("gan", list(losses.GAN_LOSSES))
def test_every_adversarial_loss_trains_with_schedules_ttur_and_ema(recipe, gan):
  mesh, generator, discriminator, init = recipe
  config = _recipe_config(gan)
  configuration.validate(config)
  with jax.set_mesh(mesh):
    step_fn = step_lib.make_train_step(config, generator, discriminator, mesh)
    batch = parallel.global_batch(mesh, {"image": BATCH})
    states = [init(jax.random.key(0))]
    history = [_host(states[0])]
    for _ in range(3):
      state, metrics = step_fn(states[-1], batch)
      states.append(state)
      history.append(_host(state))
      scalars = {k: float(v) for k, v in metrics.compute().items()}
      assert all(np.isfinite(v) for v in scalars.values()), (gan, scalars)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(history[-1]))

  # Adam's first update moves each weight by lr * g / (|g| + eps): at most, and for the weights with
  # a non-tiny gradient exactly, the scheduled rate: cosine / linear_decay at step 0, after warm-up
  # factor 1/4. G and D get their own rate (TTUR).
  assert specs.learning_rates(config, 1) == pytest.approx(
    {"g_learning_rate": 2e-3 / 4, "d_learning_rate": 8e-3 / 4}
  )
  for name, lr in (("g_params", 2e-3 / 4), ("d_params", 8e-3 / 4)):
    moved = max(
      np.max(np.abs(a - b))
      for a, b in zip(
        jax.tree.leaves(getattr(history[1], name)), jax.tree.leaves(getattr(history[0], name))
      )
    )
    np.testing.assert_allclose(moved, lr, rtol=2e-3, err_msg=f"{gan} {name}")

  # EMA: e_0 = p_0, e_k = d_k e_{k-1} + (1 - d_k) p_k, for the weights and BatchNorm statistics,
  # with the warmed-up decay d_k = min(EMA, k / (9 + k)): 0.1, 2/11, 0.25 for the first three.
  d1, d2, d3 = 0.1, 2 / 11, 0.25
  for collection, field in (("params", "g_params"), ("batch_stats", "g_batch_stats")):
    p = [getattr(h, field) for h in history]
    expected = jax.tree.map(
      lambda p0, p1, p2, p3: d3 * (d2 * (d1 * p0 + (1 - d1) * p1) + (1 - d2) * p2) + (1 - d3) * p3,
      *p,
    )
    for got, want in zip(jax.tree.leaves(history[-1].g_ema[collection]), jax.tree.leaves(expected)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  # Samples and inference use the EMA.
  variables = loop.inference_variables(states[-1])
  _assert_equal(
    (variables["params"], variables["batch_stats"]),
    (states[-1].g_ema["params"], states[-1].g_ema["batch_stats"]),
  )


def test_a_new_loss_is_one_function_one_registry_line_and_a_config_name(recipe, monkeypatch):
  """The README's worked example ("Adding a loss"), registered at run time."""

  def lsgan_pm1_d(*, real_logits, fake_logits):
    return 0.5 * (jnp.mean((real_logits - 1.0) ** 2) + jnp.mean((fake_logits + 1.0) ** 2))

  def lsgan_pm1_g(*, fake_logits):
    return 0.5 * jnp.mean(fake_logits**2)

  def charbonnier_loss(pred, target, *, huber_delta):
    return jnp.mean(jnp.sqrt((pred - target) ** 2 + huber_delta**2))

  monkeypatch.setitem(losses.GAN_LOSSES, "lsgan_pm1", losses.GanLoss(lsgan_pm1_d, lsgan_pm1_g))
  monkeypatch.setitem(losses.RECONSTRUCTION_LOSSES, "charbonnier", charbonnier_loss)
  mesh, generator, discriminator, init = recipe
  config = _recipe_config("lsgan_pm1")
  config.loss.reconstruction = "charbonnier"
  configuration.validate(config)
  with jax.set_mesh(mesh):
    step_fn = step_lib.make_train_step(config, generator, discriminator, mesh)
    state, metrics = step_fn(init(jax.random.key(0)), parallel.global_batch(mesh, {"image": BATCH}))
  scalars = {k: float(v) for k, v in metrics.compute().items()}
  assert all(np.isfinite(v) for v in scalars.values()), scalars
  # Charbonnier >= eps everywhere; D's logits start near 0, where its loss is 0.5 * (1 + 1).
  assert scalars["g_recon"] > config.loss.huber_delta
  assert 0.5 < scalars["d_adv"] < 1.5 and scalars["d_penalty"] == 0.0


def test_restore_for_inference_returns_the_ema_when_the_run_kept_one(recipe, tmp_path):
  mesh, _, _, init = recipe
  config = _recipe_config("vanilla")
  with jax.set_mesh(mesh):
    state = init(jax.random.key(0))
  # Make the EMA differ from the live weights, as it does after training.
  state = state.replace(g_ema=jax.tree.map(lambda x: x * 0.5 + 1.0, state.g_ema))
  manager = checkpointing.create_manager(str(tmp_path), config)
  checkpointing.save(manager, 3, state, config, force=True)
  manager.wait_until_finished()
  manager.close()
  restored = checkpointing.restore_for_inference(str(tmp_path))
  assert restored.step == 3
  _assert_equal(restored.g_variables, state.g_ema)


def test_a_short_runs_ema_generator_scores_close_to_the_raw_one(recipe):
  """g_ema_decay=0.999 after 25 steps: a warmed-up average of recent weights, not the random init
  (without the warm-up, 0.999**25 = 98% of it would still be the initialization)."""
  mesh, generator, discriminator, init = recipe
  config = tiny_config(**{"g_ema_decay": 0.999, "optim.g_learning_rate": 2e-3})
  photos = pipeline.load_eval_images(
    config, sources.FileImages(sources.bundled_photo_paths()[:4]), 4
  )
  with jax.set_mesh(mesh):
    step_fn = step_lib.make_train_step(config, generator, discriminator, mesh)
    batch = parallel.global_batch(mesh, {"image": photos})
    state = init(jax.random.key(0))
    initial = _host(state)
    for _ in range(25):
      state, _ = step_fn(state, batch)
    state = _host(state)
    colorize = jax.jit(functools.partial(samples.colorize_batch, generator))

    def score(params, batch_stats):
      variables = {"params": params, "batch_stats": batch_stats}
      generated = evaluator.to_uint8(colorize(variables, photos)[1])
      return {
        k: float(v) for k, v in metrics.EvalMetrics.from_images(generated, photos).compute().items()
      }

    raw = score(state.g_params, state.g_batch_stats)
    ema = score(state.g_ema["params"], state.g_ema["batch_stats"])
  assert abs(ema["psnr"] - raw["psnr"]) < 1.0, (ema, raw)
  assert abs(ema["ab_l1"] - raw["ab_l1"]) < 0.15 * raw["ab_l1"], (ema, raw)

  def distance(a, b):
    return np.sqrt(
      sum(
        np.sum((np.asarray(x) - np.asarray(y)) ** 2)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
      )
    )

  # The EMA sits among the last few steps' weights: far nearer the trained G than the init is.
  moved = distance(initial.g_params, state.g_params)
  assert distance(state.g_ema["params"], state.g_params) < 0.35 * moved


# ----------------------------------------------------------------------------- pretrain -> GAN
def test_pretrain_then_gan_hands_over_the_generator_bit_exact(tmp_path):
  pre_dir, gan_dir = str(tmp_path / "pretrain"), str(tmp_path / "gan")
  pretrain = tiny_config(
    **{"loss.gan": "none", "loss.l1_weight": 1.0, "optim.g_learning_rate": 1e-4, "total_steps": 2}
  )
  configuration.validate(pretrain)
  mesh = parallel.create_mesh()
  generator = models.create_generator(pretrain)
  discriminator = models.create_discriminator(pretrain)
  with jax.set_mesh(mesh):
    fresh = _host(step_lib.init_train_state(pretrain, generator, discriminator, mesh))
  pretrained = _host(loop.train_and_evaluate(pretrain, pre_dir))
  assert int(pretrained.step) == 2
  assert _differ(pretrained.g_params, fresh.g_params)
  _assert_equal(pretrained.d_params, fresh.d_params)  # no discriminator step in pretraining
  assert int(pretrained.d_opt_state.count) == 0

  # The GAN stage, another seed: at step 0 its generator is the pretrained one, the rest is fresh.
  gan = tiny_config(**{"init_generator_from": pre_dir, "seed": 1})
  configuration.validate(gan)
  with jax.set_mesh(mesh):
    initial = step_lib.init_train_state(gan, generator, discriminator, mesh)
    fresh_gan = _host(initial)
    handed_over = _host(warm_start.apply(gan, initial, mesh))
  _assert_equal(handed_over.g_params, pretrained.g_params)
  _assert_equal(handed_over.g_batch_stats, pretrained.g_batch_stats)
  _assert_equal(handed_over.d_params, fresh_gan.d_params)
  _assert_equal(
    (handed_over.g_opt_state, handed_over.d_opt_state),
    (fresh_gan.g_opt_state, fresh_gan.d_opt_state),
  )
  assert _differ(fresh_gan.d_params, fresh.d_params)  # the GAN's own seed, not pretraining's D

  # The same through the training loop, with a D warm-up step of 2 D updates: the generator stays
  # frozen, weights and statistics.
  gan.total_steps, gan.d_warmup_steps, gan.optim.d_steps = 1, 1, 2
  configuration.validate(gan)
  warmed = _host(loop.train_and_evaluate(gan, gan_dir))
  assert int(warmed.step) == 1
  _assert_equal(
    (warmed.g_params, warmed.g_batch_stats, warmed.g_opt_state),
    (pretrained.g_params, pretrained.g_batch_stats, fresh_gan.g_opt_state),
  )
  assert all(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(warmed.d_params), jax.tree.leaves(fresh_gan.d_params))
  )
  assert int(warmed.d_opt_state.count) == 2
  assert int(warmed.g_opt_state.count) == 0

  # A GAN config whose generator differs from the pretrained one: one line naming an array.
  wider = tiny_config(**{"model.g_base_features": 16})
  wider_generator = models.create_generator(wider)
  expected = jax.eval_shape(
    functools.partial(wider_generator.init, train=False),
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32),
  )
  with pytest.raises(
    errors.ConfigError, match=re.escape(f"config.init_generator_from={pre_dir} does not fit")
  ):
    warm_start.load_generator(pre_dir, dict(expected))


@pytest.mark.parametrize("arg", [None, "resnet_unet", "default", "quickstart", "smoke"])
def test_pretrain_configs_match_their_gan_configs(arg):
  from configs import default  # pylint: disable=g-import-not-at-top
  from configs import pretrain_l1  # pylint: disable=g-import-not-at-top
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  from configs import resnet_unet  # pylint: disable=g-import-not-at-top

  config = pretrain_l1.get_config(arg)
  configuration.validate(config)
  assert config.loss.gan == "none" and config.loss.l1_weight == 1.0
  assert (config.optim.g_learning_rate, config.optim.b1, config.optim.b2) == (1e-4, 0.9, 0.999)
  gan = {
    None: resnet_unet.get_config,
    "resnet_unet": resnet_unet.get_config,
    "default": default.get_config,
    "quickstart": quickstart.get_config,
    "smoke": lambda: resnet_unet.get_config("smoke"),
  }[arg]()
  configuration.validate(gan)
  # The hand-over needs the same generator: same name, size and widths.
  for key in (
    "image_size",
    "model.generator",
    "model.g_base_features",
    "model.resnet_depth",
    "model.num_downs",
  ):
    assert configuration.flatten(config)[key] == configuration.flatten(gan)[key], key
  with pytest.raises(ValueError, match="takes one of"):
    pretrain_l1.get_config("bogus")


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"optim.g_schedule": "step"}, "config.optim.g_schedule='step' is not known"),
    ({"optim.d_steps": 0}, "config.optim.d_steps=0 must be a number >= 1"),
    ({"g_ema_decay": 1.0}, "config.g_ema_decay=1.0 must be in [0, 1)"),
    ({"loss.gan": "none", "d_warmup_steps": 5}, "needs a discriminator"),
    ({"init_generator_from": "/nonexistent"}, "holds no checkpoints/"),
    (
      {"model.generator": "resnet_unet", "image_size": 48, "data.load_size": 48},
      "multiple of 32 for the ResNet U-Net",
    ),
    ({"model.resnet_depth": 50}, "choose 18 or 34"),
    ({"model.ab_bound": 0.0}, "must be in (0, 1]"),
  ],
)
def test_recipe_config_mistakes(overrides, message):
  with pytest.raises(errors.ConfigError, match=re.escape(message)):
    configuration.validate(tiny_config(**overrides))


@pytest.mark.parametrize("arg", [None, "study"])
def test_the_recommended_config_is_a_working_config(arg, tmp_path):
  from configs import recommended  # pylint: disable=g-import-not-at-top

  config = recommended.get_config(arg)
  configuration.validate(config)
  assert config.loss.gan == "none" and config.vividness.calibrate
  assert config.precise_bn_batches == 32 and config.vividness.colorfulness_share == 0.74
  config.data.source, config.data.path = "folder", str(tmp_path)  # as a user points it elsewhere
  configuration.validate(config)
  config.data.path = ""
  with pytest.raises(errors.ConfigError, match="needs config.data.path"):
    configuration.validate(config)
  with pytest.raises(ValueError, match=":study"):
    recommended.get_config("large")
