"""Phases inside one run (config.phases) and weight interpolation (config.phases.interpolate)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorgan import errors
from colorgan import configuration
from colorgan import models
from colorgan import parallel
from colorgan.inference import colorize
from colorgan.inference import photo
from colorgan.models import vividness
from colorgan.training import interpolation
from colorgan.training import loop
from colorgan.training import phases as phases_lib
from colorgan.training import preemption
from colorgan.training import step as step_lib
from tests.conftest import leaves as _leaves
from tests.conftest import tiny_config

TOTAL = 8
PHASES = {  # of 8 steps: G alone 1-2, D alone 3-4, GAN 5-8 with its weight ramped over 5-6
  "total_steps": TOTAL,
  "phases.reconstruction": 0.25,
  "phases.d_warmup": 0.25,
  "phases.gan_ramp": 0.25,
  "phases.interpolate": True,
  "checkpoint_every_steps": TOTAL,
  "log_every_steps": TOTAL,
  "sample_every_steps": TOTAL,
  "eval_every_steps": 0,
  "num_samples": 1,
  "vividness.calibrate": True,
}


def _same(a, b) -> bool:
  x, y = _leaves(a), _leaves(b)
  return len(x) == len(y) > 0 and all(np.array_equal(u, v) for u, v in zip(x, y))


def test_boundaries_are_fractions_of_total_steps_and_the_ramp_is_linear():
  phases = phases_lib.from_config(tiny_config(**PHASES))
  assert phases == phases_lib.Phases(reconstruction_end=2, d_warmup_end=4, ramp_steps=2)
  kinds = [phases.kind(step) for step in range(1, TOTAL + 1)]
  assert kinds == ["reconstruction"] * 2 + ["d_warmup"] * 2 + ["gan"] * 4
  # state.step is 0-based: the first GAN update (loop step 5) has state.step 4.
  assert [float(phases.gan_ramp(s)) for s in (3, 4, 5, 6, 7)] == [0.0, 0.5, 1.0, 1.0, 1.0]
  scaled = phases_lib.from_config(tiny_config(**{**PHASES, "total_steps": 800}))
  assert scaled == phases_lib.Phases(200, 400, 200)
  # Without phases: config.d_warmup_steps as before.
  assert phases_lib.from_config(tiny_config(d_warmup_steps=3)) == phases_lib.Phases(0, 3, 0)


@pytest.mark.parametrize(
  "overrides, key",
  [
    ({"phases.reconstruction": 0.6, "phases.d_warmup": 0.4}, "leave no step for the GAN"),
    ({"phases.d_warmup": 0.1, "d_warmup_steps": 2}, "both set a D warm-up"),
    ({"phases.interpolate": True}, "needs config.phases.reconstruction > 0"),
    ({"phases.gan_ramp": 0.2, "loss.gan": "none"}, "need a discriminator"),
    ({"phases.reconstruction": 1.5}, "phases.reconstruction"),
  ],
)
def test_phase_mistakes_are_named(overrides, key):
  with pytest.raises(errors.ConfigError, match=key):
    configuration.validate(tiny_config(**overrides))


def test_each_phase_updates_only_its_networks_and_the_ramp_scales_the_gan_terms():
  config = tiny_config(**PHASES, **{"loss.feature_matching_weight": 10.0})
  mesh = parallel.create_mesh()
  g, d = models.create_generator(config), models.create_discriminator(config)
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  make = lambda **kw: step_lib.make_train_step(config, g, d, mesh, **kw)  # noqa: E731
  with jax.set_mesh(mesh):
    batch = parallel.global_batch(mesh, {"image": images})
    state = step_lib.init_train_state(config, g, d, mesh)
    g0, d0 = _leaves(state.g_params), _leaves(state.d_params)
    after, m = make(adversarial=False)(state, batch)
    assert _same(after.d_params, d0) and not _same(after.g_params, g0)
    assert float(m.compute()["d_loss"]) == 0 and float(m.compute()["g_adv"]) == 0
    g1, d1 = _leaves(after.g_params), _leaves(after.d_params)
    after, _ = make(train_g=False)(after, batch)
    assert _same(after.g_params, g1) and not _same(after.d_params, d1)
    ramped = {}
    for step in (4, 5):  # the first GAN update: half the weight; the next: all of it
      fresh = jax.tree.map(jnp.copy, after)  # each call donates the state it is given
      _, m = make()(fresh.replace(step=jnp.int32(step)), batch)
      ramped[step] = {k: float(v) for k, v in m.compute().items()}
  for step, factor in ((4, 0.5), (5, 1.0)):
    r = ramped[step]
    np.testing.assert_allclose(r["g_adv_weighted"], factor * r["g_adv"], rtol=1e-6)
    np.testing.assert_allclose(
      r["g_loss"],
      r["g_adv_weighted"] + r["g_recon_weighted"] + factor * 10.0 * r["g_feature_matching"],
      rtol=1e-5,
    )


@pytest.fixture(scope="module")
def phased_runs(tmp_path_factory, monkeypatch_module):
  """TOTAL steps in one go (a), and stopped at step 3 (inside the D warm-up, after the anchor was
  kept at step 2), then rerun to the end (b)."""
  root = tmp_path_factory.mktemp("phases")
  a, b = str(root / "a"), str(root / "b")
  uninterrupted = loop.train_and_evaluate(tiny_config(**PHASES), a)
  with monkeypatch_module.context() as patch:
    patch.setattr(preemption.StopRequest, "requested", lambda self, step: step == 3)
    patch.setattr(preemption.StopRequest, "signal_name", "SIGTERM", raising=False)
    with pytest.raises(preemption.Preempted):
      loop.train_and_evaluate(tiny_config(**PHASES), b)
  resumed = loop.train_and_evaluate(tiny_config(**PHASES), b)
  return a, b, uninterrupted, resumed


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as patch:
    yield patch


def test_a_run_stopped_inside_a_phase_resumes_bit_exactly(phased_runs):
  _, _, uninterrupted, resumed = phased_runs
  assert int(resumed.step) == TOTAL
  for name in ("g_params", "g_batch_stats", "g_opt_state", "d_params", "d_opt_state", "g_anchor"):
    assert _same(getattr(uninterrupted, name), getattr(resumed, name)), name
  # The anchor is G at the end of the reconstruction phase, not the final G.
  assert not _same(uninterrupted.g_anchor["params"], uninterrupted.g_params)


def test_interpolation_ends_are_the_two_generators(phased_runs):
  a, _, state, _ = phased_runs
  saved = vividness.read_interpolation(a)
  final = loop.inference_variables(state)
  assert _same(vividness.interpolate(final, saved, 0.0), state.g_anchor)
  assert _same(vividness.interpolate(final, saved, 1.0), final)
  middle = vividness.interpolate(final, saved, 0.5)
  np.testing.assert_allclose(
    _leaves(middle["params"])[0],
    0.5 * _leaves(state.g_anchor["params"])[0] + 0.5 * _leaves(final["params"])[0],
    rtol=1e-6,
  )
  cal = vividness.read(a)
  assert cal.method == "interpolation" and (cal.low, cal.high) == (0.0, 1.0)
  table = json.load(open(os.path.join(a, vividness.FILE)))["table"]
  assert [row["vividness"] for row in table][:2] == [0.0, 0.05]


def test_reestimated_statistics_are_the_batch_statistics(phased_runs):
  _, _, state, _ = phased_runs
  config = tiny_config(**PHASES)
  g = models.create_generator(config)
  variables = jax.device_get(loop.inference_variables(state))
  rng = np.random.default_rng(1)
  batches = [rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
  got = interpolation.reestimate(g, variables, batches)
  # Independently: from zero running statistics, one update leaves (1 - momentum) * batch.
  zero = {**variables, "batch_stats": jax.tree.map(np.zeros_like, variables["batch_stats"])}
  from colorgan import color  # pylint: disable=g-import-not-at-top

  singles = []
  for i, images in enumerate(batches):
    l, _ = color.rgb_uint8_to_model_lab(images)
    _, updates = g.apply(
      zero, l, train=True, rngs={"dropout": jax.random.key(i)}, mutable=["batch_stats"]
    )
    singles.append(jax.tree.map(lambda x: np.asarray(x) / 0.1, updates["batch_stats"]))
  want = jax.tree.map(lambda x, y: (x + y) / 2, *singles)
  for x, y in zip(_leaves(got), _leaves(want)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_colorize_at_vividness_0_is_the_reconstruction_phases_generator(phased_runs):
  a, _, state, _ = phased_runs
  rgb = np.random.default_rng(2).integers(0, 256, (24, 40, 3), dtype=np.uint8)
  at_zero = colorize.Colorizer.from_checkpoint(a, setting=vividness.resolve(a, 0.0), batch_size=1)
  anchor = colorize.Colorizer(
    tiny_config(**PHASES), jax.device_get(state.g_anchor), step=TOTAL, batch_size=1
  )
  one = photo.Photo(photo.lightness(rgb), None)
  np.testing.assert_array_equal(at_zero.colorize_photo(one), anchor.colorize_photo(one))
  at_one = colorize.Colorizer.from_checkpoint(a, setting=vividness.resolve(a, 1.0), batch_size=1)
  plain = colorize.Colorizer.from_checkpoint(a, batch_size=1)
  np.testing.assert_array_equal(at_one.colorize_photo(one), plain.colorize_photo(one))
