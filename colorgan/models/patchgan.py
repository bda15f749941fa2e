"""The PatchGAN discriminator (pix2pix NLayerDiscriminator): concat(L, ab) -> a grid of patch logits."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from colorgan import hints as hints_lib
from colorgan.models import layers


class PatchGAN(nn.Module):
  """70x70 PatchGAN for n_layers=3: 256 px in, 30x30 logits out, 2,765,633 parameters.

  Attributes:
    base_features: filters of the first conv (ndf).
    n_layers: stride-2 blocks after the first conv (the last of them has stride 1).
    dtype: activation dtype; parameters, BatchNorm statistics and the logits stay float32.
    fast_layers: convolutions as matrix products (layers.MatmulConv), same parameters and outputs.
    use_hints: also conditioned on the generator's hint map (colorgan/hints.py): concat(L, ab,
      hints), 6 input channels instead of 3 (see models._patchgan).
    spectral_norm: every conv spectrally normalized (flax.linen.SpectralNorm, one power iteration
      per call, its vectors in the "batch_stats" collection, updated when train) and no BatchNorm,
      as SN-GAN's and SAGAN's discriminators; the hidden convs then have biases.
  """

  base_features: int = 64
  n_layers: int = 3
  dtype: jnp.dtype = jnp.float32
  fast_layers: bool = False
  use_hints: bool = False
  spectral_norm: bool = False

  def _conv(self, features: int, *, strides: int, use_bias: bool, name: str, train: bool):
    make = functools.partial(
      layers.down_conv, features, strides=strides, use_bias=use_bias, dtype=self.dtype
    )
    if not self.spectral_norm:
      return make(fast=self.fast_layers, name=name)
    normalized = nn.SpectralNorm(make(fast=self.fast_layers, name=f"{name}_conv"), name=name)
    return lambda x: normalized(x, update_stats=train)

  @nn.compact
  def __call__(self, l, ab, hints=None, *, train: bool, return_features: bool = False):
    """Args: l: [B, H, W, 1], ab: [B, H, W, 2], hints: [B, H, W, 3] (use_hints only; None: no
    hint). Returns: logits [B, H', W', 1], float32; return_features: (logits, the activations
    after each hidden layer), for feature matching (losses.feature_matching)."""
    x = jnp.concatenate([l, ab], axis=-1)
    if self.use_hints:
      x = jnp.concatenate([x, hints_lib.no_hints(l) if hints is None else hints], axis=-1)
    elif hints is not None:
      raise ValueError("this discriminator was built without hint inputs")
    x = x.astype(self.dtype)
    x = self._conv(self.base_features, strides=2, use_bias=True, name="conv0", train=train)(x)
    x = nn.leaky_relu(x, 0.2)
    features = [x]
    for i in range(1, self.n_layers + 1):
      stride = 1 if i == self.n_layers else 2
      x = self._conv(
        self.base_features * min(2**i, 8),
        strides=stride,
        use_bias=self.spectral_norm,
        name=f"conv{i}",
        train=train,
      )(x)
      if not self.spectral_norm:
        x = layers.BatchNorm(use_running_average=not train, dtype=self.dtype, name=f"bn{i}")(x)
      x = nn.leaky_relu(x, 0.2)
      features.append(x)
    x = self._conv(1, strides=1, use_bias=True, name="logits", train=train)(x)
    logits = x.astype(jnp.float32)
    return (logits, features) if return_features else logits
