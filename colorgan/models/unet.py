"""The pix2pix U-Net generator: L (and a hint map, with use_hints) -> ab.

Same layers and parameter count as junyanz/pytorch-CycleGAN-and-pix2pix's UnetGenerator with
BatchNorm (convs before a BatchNorm have no bias) and use_dropout=True, written as an encoder loop and a
decoder loop instead of nested blocks. unet_256 (num_downs=8) has 54,409,858 parameters.
"""

import flax.linen as nn
import jax.numpy as jnp

from colorgan import hints as hints_lib
from colorgan.models import layers


class UNetGenerator(nn.Module):
  """pix2pix U-Net.

  Attributes:
    num_downs: number of stride-2 down blocks; log2(image_size) brings the bottleneck to 1x1.
    base_features: filters of the outermost block (pix2pix's ngf); capped at 8x deeper in.
    out_channels: 2 (a, b), or the number of ab bins of a classification head (models.ab_bins).
    logits: the output is out_channels raw logits (a classification head), not tanh(ab): the last
      up conv gives base_features channels and a 1x1 conv the logits.
    dropout_rate: dropout in the `num_downs - 5` ngf*8 decoder blocks next to the innermost one
      (three for unet_256), as pix2pix's use_dropout.
    dtype: activation dtype (float32 or bfloat16); parameters stay float32.
    fast_layers: convolutions as matrix products (layers.MatmulConv/MatmulConvTranspose); same
      parameters and outputs as the plain nn.Conv/nn.ConvTranspose path, several times faster on CPU.
    use_hints: the input is L and a hint map (colorgan/hints.py), 4 channels instead of 1; only the
      outermost conv changes (3 more input channels).
  """

  num_downs: int
  base_features: int = 64
  out_channels: int = 2
  logits: bool = False
  dropout_rate: float = 0.5
  dtype: jnp.dtype = jnp.float32
  fast_layers: bool = False
  use_hints: bool = False

  @nn.compact
  def __call__(self, l, hints=None, *, train: bool):
    """Args: l: [B, H, W, 1] in [-1, 1]; hints: [B, H, W, 3] (use_hints only; None: no hint).
    Returns: ab: [B, H, W, 2] in (-1, 1), float32."""
    if self.num_downs < 5:
      raise ValueError(f"UNetGenerator needs num_downs >= 5, got {self.num_downs}")
    n = self.num_downs
    features = [self.base_features * min(2**i, 8) for i in range(n)]  # 64,128,256,512,512,...

    x = hints_lib.generator_input(l, hints, self.use_hints).astype(self.dtype)
    skips = []
    for level, f in enumerate(features):
      if level > 0:
        x = nn.leaky_relu(x, 0.2)
      x = layers.down_conv(
        f, use_bias=False, dtype=self.dtype, fast=self.fast_layers, name=f"down{level}"
      )(x)
      # The outermost and innermost down convs have no norm in pix2pix.
      if 0 < level < n - 1:
        x = layers.BatchNorm(
          use_running_average=not train, dtype=self.dtype, name=f"down{level}_bn"
        )(x)
      skips.append(x)

    for level in reversed(range(n)):
      if level < n - 1:
        x = jnp.concatenate([skips[level], x], axis=-1)
      x = nn.relu(x)
      if level == 0:
        if self.logits:  # a 1x1 conv to the bins: a 4x4 one would cost 16x as much, at every pixel
          x = layers.up_conv(
            self.base_features, use_bias=True, dtype=self.dtype, fast=self.fast_layers, name="up0"
          )(x)
          x = nn.Dense(self.out_channels, dtype=self.dtype, name="logits")(nn.relu(x))
          return x.astype(jnp.float32)
        x = layers.up_conv(
          self.out_channels, use_bias=True, dtype=self.dtype, fast=self.fast_layers, name="up0"
        )(x)
        return jnp.tanh(x.astype(jnp.float32))
      x = layers.up_conv(
        features[level - 1],
        use_bias=False,
        dtype=self.dtype,
        fast=self.fast_layers,
        name=f"up{level}",
      )(x)
      x = layers.BatchNorm(use_running_average=not train, dtype=self.dtype, name=f"up{level}_bn")(x)
      if 4 <= level <= n - 2:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
