"""The joint train step and the training loop, end to end on tiny configs."""

import glob
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from colorgan.data import pipeline
from colorgan.data import sources
from colorgan import models
from colorgan import parallel
from colorgan.training import loop
from colorgan.training import step as step_lib
from tests.conftest import leaves as _leaves
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def setup():
  config = tiny_config(batch_size=4)
  mesh = parallel.create_mesh()
  generator, discriminator = models.create_generator(config), models.create_discriminator(config)
  with jax.set_mesh(mesh):
    step_fn = step_lib.make_train_step(config, generator, discriminator, mesh)
    init = lambda: step_lib.init_train_state(config, generator, discriminator, mesh)  # noqa: E731
    source = sources.create_source(config)
    ds = pipeline.create_train_dataset(config, source.train, rows=(0, 4))
    batch = parallel.global_batch(mesh, next(iter(ds.as_numpy_iterator())))
  return config, mesh, step_fn, init, batch


def test_one_step_updates_both_networks_and_reports_finite_losses(setup):
  config, mesh, step_fn, init, batch = setup
  with jax.set_mesh(mesh):
    before = jax.device_get(init())
    state, metrics = step_fn(init(), batch)
  after = jax.device_get(state)
  assert int(after.step) == 1
  for name in ("g_params", "d_params", "g_batch_stats"):
    changed = [
      not np.array_equal(a, b)
      for a, b in zip(_leaves(getattr(before, name)), _leaves(getattr(after, name)))
    ]
    assert all(changed), f"{name}: {sum(changed)}/{len(changed)} leaves changed"
  scalars = {k: float(v) for k, v in metrics.compute().items()}
  assert set(scalars) == set(step_lib.METRIC_NAMES)
  assert all(np.isfinite(v) for v in scalars.values())
  # 100 * L1 weighting as configured, and the vanilla losses start near log(2) for D and G.
  np.testing.assert_allclose(scalars["g_recon_weighted"], 100 * scalars["g_recon"], rtol=1e-5)
  np.testing.assert_allclose(
    scalars["g_loss"], scalars["g_adv"] + scalars["g_recon_weighted"], rtol=1e-5
  )
  assert 0.4 < scalars["d_loss"] < 1.0 and scalars["d_penalty"] == 0.0


def test_reconstruction_loss_falls_on_a_fixed_batch(setup):
  config, mesh, step_fn, init, batch = setup
  with jax.set_mesh(mesh):
    state = init()
    recon = []
    for _ in range(8):
      state, metrics = step_fn(state, batch)
      recon.append(float(metrics.compute()["g_recon"]))
  assert recon[-1] < 0.9 * recon[0], recon
  assert sum(b < a for a, b in zip(recon, recon[1:])) >= 6, recon


def test_step_is_deterministic(setup):
  config, mesh, step_fn, init, batch = setup
  with jax.set_mesh(mesh):
    a, _ = step_fn(init(), batch)
    b, _ = step_fn(init(), batch)
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_train_and_evaluate_end_to_end_and_resume(tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config(total_steps=4)
  state = loop.train_and_evaluate(config, workdir)
  assert int(state.step) == 4
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  samples = sorted(os.listdir(os.path.join(workdir, "samples")))
  assert samples == ["step_0000002.png", "step_0000004.png"]
  grid = np.asarray(Image.open(os.path.join(workdir, "samples", samples[-1])))
  # 2 photos of 32 px in rows, gray | generated | real in columns, 2-px gutters.
  assert grid.shape == (2 * 32 + 2, 3 * 32 + 4, 3)
  gray = grid[:32, :32].astype(int)
  assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 1  # the first column has no color
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["total_steps"] == 4

  # Rerunning with a larger budget resumes at step 4 instead of starting over.
  config.total_steps = 6
  resumed = loop.train_and_evaluate(config, workdir)
  assert int(resumed.step) == 6
  assert "6" in os.listdir(os.path.join(workdir, "checkpoints"))
