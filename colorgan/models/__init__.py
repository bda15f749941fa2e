"""Generator and discriminator registries: a config name -> a Flax module."""

import math

import jax
import jax.numpy as jnp
import ml_collections

from colorgan import hints
from colorgan.models.patchgan import PatchGAN
from colorgan.models.resnet_unet import ResNetUNet
from colorgan.models.unet import UNetGenerator

FAST_LAYERS = ("auto", True, False)  # the values config.model.fast_layers takes


def unet_num_downs(image_size: int) -> int:
  """U-Net depth for an image size: log2(size), so the bottleneck is 1x1 (unet_256 -> 8)."""
  return int(round(math.log2(image_size)))


def use_fast_layers(config: ml_collections.ConfigDict, backend: str | None = None) -> bool:
  """config.model.fast_layers resolved: whether the 4x4 convs are matrix products (models/layers.py).

  "auto" picks them on CPU only: they exist because XLA:CPU's convolutions are slow, and they copy
  each input up to 16 times (im2col), which cuDNN's and XLA:TPU's own convolutions do not need.

  Args:
    config: a validated config.
    backend: "cpu", "gpu" or "tpu"; None: jax.default_backend() (this starts the backend).
  """
  value = config.model.fast_layers
  if value == "auto":
    return (backend or jax.default_backend()) == "cpu"
  return bool(value)


def _unet(config: ml_collections.ConfigDict, dtype, fast_layers: bool):
  return UNetGenerator(
      num_downs=config.model.num_downs or unet_num_downs(config.image_size),
      base_features=config.model.g_base_features,
      dropout_rate=config.model.dropout_rate,
      dtype=dtype, fast_layers=fast_layers, use_hints=hints.enabled(config))


def _resnet_unet(config: ml_collections.ConfigDict, dtype, fast_layers: bool):
  del fast_layers  # flax's layers throughout
  return ResNetUNet(depth=config.model.resnet_depth, width=config.model.g_base_features,
                    ab_bound=config.model.ab_bound, dtype=dtype, use_hints=hints.enabled(config))


# name -> (config, dtype, fast_layers) -> module; fast_layers is use_fast_layers(config) resolved.
# A generator takes L and optional hints, `__call__(l, hints=None, *, train)`, and with
# config.hints.enabled a hint map beside L (colorgan/hints.py; None: no hint).
GENERATORS = {"unet": _unet, "resnet_unet": _resnet_unet}


# With hints, D is conditioned on them as well as on L: concat(L, ab, hints), as pix2pix conditions
# D on the generator's whole input, so that it judges whether the colors fit what G was given. A D
# blind to the hints rewards vivid colors whatever the hints say: hinted results then came out too
# colorful, more so with every hint, and PSNR fell past 20 points (README "Color hints").
def _patchgan(config: ml_collections.ConfigDict, dtype, fast_layers: bool):
  return PatchGAN(base_features=config.model.d_base_features, n_layers=config.model.d_layers,
                  dtype=dtype, fast_layers=fast_layers, use_hints=hints.enabled(config))


DISCRIMINATORS = {"patchgan": _patchgan}


def create_generator(config: ml_collections.ConfigDict, backend: str | None = None, *,
                     fast_layers: bool | None = None):
  """The config's generator; `backend` as use_fast_layers (None: the default backend), unless
  `fast_layers` says which layers to use."""
  if fast_layers is None:
    fast_layers = use_fast_layers(config, backend)
  return GENERATORS[config.model.generator](config, jnp.dtype(config.compute_dtype), fast_layers)


def create_discriminator(config: ml_collections.ConfigDict, backend: str | None = None):
  """The config's discriminator; `backend` as use_fast_layers (None: the default backend)."""
  return DISCRIMINATORS[config.model.discriminator](config, jnp.dtype(config.compute_dtype),
                                                    use_fast_layers(config, backend))
