"""Building blocks shared by the generators and the discriminator, with pix2pix's initialization."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

# pix2pix's init_weights('normal', 0.02): conv weights N(0, 0.02), BatchNorm scale N(1, 0.02).
conv_init = nn.initializers.normal(stddev=0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


# PyTorch's BatchNorm momentum 0.1 updates running = 0.9 * running + 0.1 * batch: Flax's momentum=0.9.
# epsilon 1e-5 as in PyTorch. Statistics and scale/bias stay float32 under bf16 compute.
BatchNorm = functools.partial(
    nn.BatchNorm, momentum=0.9, epsilon=1e-5, scale_init=bn_scale_init, param_dtype=jnp.float32)


def down_conv(features: int, *, strides: int = 2, use_bias: bool, dtype, name: str | None = None):
  """4x4 conv with PyTorch padding 1: halves the size at stride 2 (and shrinks by 1 at stride 1)."""
  return nn.Conv(features, (4, 4), strides=(strides, strides), padding=((1, 1), (1, 1)),
                 use_bias=use_bias, kernel_init=conv_init, dtype=dtype, name=name)


def up_conv(features: int, *, use_bias: bool, dtype, name: str | None = None):
  """4x4 stride-2 transposed conv, PyTorch padding 1: doubles the size exactly.

  lax.conv_transpose pads the stride-dilated input; k - 1 - p = 2 on each side matches PyTorch's
  ConvTranspose2d(kernel 4, stride 2, padding 1).
  """
  return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                          use_bias=use_bias, kernel_init=conv_init, dtype=dtype, name=name)
