"""Generator and discriminator: pix2pix's parameter counts, shapes, init, BatchNorm and dropout."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorgan import models
from colorgan.models import layers
from colorgan.models.patchgan import PatchGAN
from colorgan.models.unet import UNetGenerator


def _shapes(module, *inputs):
  rng = jax.random.key(0)
  variables = jax.eval_shape(functools.partial(module.init, train=False), rng, *inputs)
  out = jax.eval_shape(functools.partial(module.apply, train=False), variables, *inputs)
  count = sum(int(x.size) for x in jax.tree.leaves(variables["params"]))
  return count, out.shape


def _inputs(size, batch=1):
  return (
    jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32),
    jax.ShapeDtypeStruct((batch, size, size, 2), jnp.float32),
  )


@pytest.mark.parametrize(
  "size, g_params",
  [
    (256, 54_409_858),  # pix2pix unet_256
    # Each level less removes one ngf*8 block: 512*512*16 + 1024*512*16 weights + 2 * 2 * 512 BN.
    (128, 54_409_858 - 12_584_960),  # unet_128
    (64, 29_239_938),  # depth 6, as in the PyTorch reference at 64 px
  ],
)
def test_generator_parameter_counts(size, g_params):
  l, _ = _inputs(size)
  count, shape = _shapes(UNetGenerator(num_downs=models.unet_num_downs(size)), l)
  assert count == g_params
  assert shape == (1, size, size, 2)


def test_discriminator_parameter_count_and_logits():
  l, ab = _inputs(256, batch=2)
  count, shape = _shapes(PatchGAN(), l, ab)
  assert count == 2_765_633
  assert shape == (2, 30, 30, 1)


def test_registry_builds_the_configured_models(tiny):
  config = tiny()
  assert isinstance(models.create_generator(config), UNetGenerator)
  assert models.create_generator(config).num_downs == 5  # 32 px
  assert isinstance(models.create_discriminator(config), PatchGAN)


def test_init_distributions():
  g = UNetGenerator(num_downs=5, base_features=16)
  variables = g.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)
  params = variables["params"]
  kernels = np.concatenate([np.ravel(v["kernel"]) for v in params.values() if "kernel" in v])
  scales = np.concatenate([np.ravel(v["scale"]) for v in params.values() if "scale" in v])
  assert abs(kernels.mean()) < 1e-3 and abs(kernels.std() - 0.02) < 1e-3
  assert abs(scales.mean() - 1.0) < 5e-3 and abs(scales.std() - 0.02) < 5e-3
  # pix2pix: convs followed by BatchNorm have no bias; only the last up conv has one.
  biased = sorted(k for k, v in params.items() if "bias" in v and "kernel" in v)
  assert biased == ["up0"]


def test_batchnorm_momentum_matches_pytorch():
  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch_stat (unbiased var in PyTorch; Flax
  # uses the biased one, the same as PyTorch's normalization in the forward pass).
  bn = layers.BatchNorm(use_running_average=False)
  x = jnp.arange(8.0).reshape(8, 1)
  variables = bn.init(jax.random.key(0), x)
  _, updates = bn.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_allclose(updates["batch_stats"]["mean"], [0.1 * 3.5], rtol=1e-6)
  np.testing.assert_allclose(updates["batch_stats"]["var"], [0.9 * 1.0 + 0.1 * 5.25], rtol=1e-6)


def _torch_conv_transpose_reference(x, kernel):
  """PyTorch ConvTranspose2d(k=4, s=2, p=1) by its definition, in numpy, as a scatter.

  out[2i - 1 + ky, 2j - 1 + kx] += x[i, j] . W[ky, kx]; Flax's (non-transposed) kernel is W flipped.
  """
  w = kernel[::-1, ::-1]
  b, h, wd, _ = x.shape
  out = np.zeros((b, 2 * h + 2, 2 * wd + 2, w.shape[-1]))
  for i in range(h):
    for j in range(wd):
      out[:, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += np.einsum("bc,yxcd->byxd", x[:, i, j], w)
  return out[:, 1:-1, 1:-1]


def test_up_conv_is_pytorch_conv_transpose():
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 4)).astype(np.float32)
  conv = layers.up_conv(6, use_bias=False, dtype=jnp.float32)
  variables = conv.init(jax.random.key(0), x)
  got = conv.apply(variables, x)
  expected = _torch_conv_transpose_reference(x, np.asarray(variables["params"]["kernel"]))
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_down_conv_halves_like_pytorch():
  x = jnp.ones((1, 8, 8, 3))
  conv = layers.down_conv(5, use_bias=False, dtype=jnp.float32)
  out = conv.apply(conv.init(jax.random.key(0), x), x)
  assert out.shape == (1, 4, 4, 5)


@pytest.mark.parametrize("size, has_dropout", [(32, False), (64, True)])
def test_dropout_follows_pix2pix(size, has_dropout):
  # pix2pix puts dropout in the num_downs - 5 ngf*8 decoder blocks next to the innermost: none at
  # depth 5 (32 px), one at depth 6 (64 px), three at depth 8 (256 px).
  g = UNetGenerator(num_downs=models.unet_num_downs(size), base_features=4)
  l = jax.random.normal(jax.random.key(0), (2, size, size, 1))
  variables = g.init(jax.random.key(1), l, train=False)
  run = lambda seed: g.apply(
    variables,
    l,
    train=True,
    rngs={"dropout": jax.random.key(seed)},  # noqa
    mutable=["batch_stats"],
  )[0]
  assert (not np.allclose(run(0), run(1))) == has_dropout
  np.testing.assert_array_equal(run(0), run(0))
  # Inference is deterministic and needs no rng.
  np.testing.assert_array_equal(
    g.apply(variables, l, train=False), g.apply(variables, l, train=False)
  )


def test_generator_output_is_bounded_ab():
  g = UNetGenerator(num_downs=5, base_features=8)
  l = jax.random.uniform(jax.random.key(0), (2, 32, 32, 1), minval=-1, maxval=1)
  variables = g.init(jax.random.key(1), l, train=False)
  ab = g.apply(variables, l, train=False)
  assert ab.shape == (2, 32, 32, 2) and ab.dtype == jnp.float32
  assert float(jnp.abs(ab).max()) < 1.0
