"""Generator and discriminator registries: a config name -> a Flax module."""

import math

import jax.numpy as jnp
import ml_collections

from colorgan.models.patchgan import PatchGAN
from colorgan.models.resnet_unet import ResNetUNet
from colorgan.models.unet import UNetGenerator


def unet_num_downs(image_size: int) -> int:
  """U-Net depth for an image size: log2(size), so the bottleneck is 1x1 (unet_256 -> 8)."""
  return int(round(math.log2(image_size)))


def _unet(config: ml_collections.ConfigDict, dtype):
  return UNetGenerator(
      num_downs=config.model.num_downs or unet_num_downs(config.image_size),
      base_features=config.model.g_base_features,
      dropout_rate=config.model.dropout_rate,
      dtype=dtype, fast_layers=config.model.fast_layers)


def _resnet_unet(config: ml_collections.ConfigDict, dtype):
  return ResNetUNet(depth=config.model.resnet_depth, width=config.model.g_base_features,
                    ab_bound=config.model.ab_bound, dtype=dtype)


GENERATORS = {"unet": _unet, "resnet_unet": _resnet_unet}


def _patchgan(config: ml_collections.ConfigDict, dtype):
  return PatchGAN(base_features=config.model.d_base_features, n_layers=config.model.d_layers,
                  dtype=dtype, fast_layers=config.model.fast_layers)


DISCRIMINATORS = {"patchgan": _patchgan}


def create_generator(config: ml_collections.ConfigDict):
  return GENERATORS[config.model.generator](config, jnp.dtype(config.compute_dtype))


def create_discriminator(config: ml_collections.ConfigDict):
  return DISCRIMINATORS[config.model.discriminator](config, jnp.dtype(config.compute_dtype))
