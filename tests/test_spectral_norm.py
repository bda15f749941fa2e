"""config.model.d_spectral_norm: a PatchGAN whose convs are spectrally normalized (SN-GAN)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorgan import models
from colorgan import parallel
from colorgan.training import step as step_lib
from tests.conftest import tiny_config


@pytest.mark.parametrize("fast_layers", [True, False])
def test_each_normalized_conv_has_spectral_norm_one(fast_layers):
  config = tiny_config(**{"model.d_spectral_norm": True, "model.fast_layers": fast_layers})
  d = models.create_discriminator(config)
  l = jnp.zeros((2, 32, 32, 1))
  ab = jnp.full((2, 32, 32, 2), 0.1)
  variables = d.init(jax.random.key(0), l, ab, train=False)
  assert "bn1" not in variables["params"]  # no BatchNorm beside the spectral norm
  apply = jax.jit(lambda v: d.apply(v, l, ab, train=True, mutable=["batch_stats"])[1])
  for _ in range(60):  # one power iteration per training call
    variables = {**variables, **apply(variables)}
  for name, layer in variables["params"].items():
    kernel = np.asarray(layer["kernel"]).reshape(-1, layer["kernel"].shape[-1])
    sigma = float(jax.tree.leaves(variables["batch_stats"][name.removesuffix("_conv")])[0])
    top = np.linalg.svd(kernel, compute_uv=False)[0]  # the reference
    assert sigma == pytest.approx(top, rel=2e-2), name
  # The same parameters and outputs on both layer paths (fast_layers stays a free key).
  other = models.create_discriminator(
    tiny_config(**{"model.d_spectral_norm": True, "model.fast_layers": not fast_layers})
  )
  np.testing.assert_allclose(
    d.apply(variables, l + 0.3, ab, train=False),
    other.apply(variables, l + 0.3, ab, train=False),
    atol=1e-5,
  )


def test_the_train_step_keeps_the_power_iteration_in_the_state():
  config = tiny_config(**{"model.d_spectral_norm": True})
  mesh = parallel.create_mesh()
  g, d = models.create_generator(config), models.create_discriminator(config)
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  with jax.set_mesh(mesh):
    state = step_lib.init_train_state(config, g, d, mesh)
    before = [np.asarray(x) for x in jax.tree.leaves(state.d_stats)]
    assert before
    new, metrics = step_lib.make_train_step(config, g, d, mesh)(
      state, parallel.global_batch(mesh, {"image": images})
    )
  after = [np.asarray(x) for x in jax.tree.leaves(new.d_stats)]
  assert len(after) == len(before) and not any(np.array_equal(a, b) for a, b in zip(after, before))
  assert np.isfinite(float(metrics.compute()["d_loss"]))
  # Without spectral norm the state has no such leaves (checkpoints of before still fit).
  plain = step_lib.create_train_state(
    tiny_config(), g, models.create_discriminator(tiny_config()), jax.random.key(0)
  )
  assert plain.d_stats == {}
