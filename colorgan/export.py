"""Export the whole colorize function, photo in, photo out (`--mode=export`).

What is exported is `--mode=colorize`'s computation (colorize.py) for one photo, written in jax.numpy
so that it traces with a dynamic height and width:
  uint8 [H, W, 3] (gray replicated, or RGB whose color is discarded) -> uint8 RGB [H, W, 3].
Each Pillow BILINEAR resize (antialiased when shrinking) is two matrix products whose weights are
built from iotas and the traced sizes, the mirror padding is index arithmetic, the generator runs in
inference mode (running BatchNorm statistics, no dropout; the EMA when the run kept one), and the
photo's own full-resolution L is joined with the upsampled ab, out-of-gamut chroma reduced by
bisection, as colorize.compose does.

Formats (`FORMATS`): savedmodel (jax2tf, serving signature), tflite (converted from that SavedModel),
onnx (colorgan/onnx_export.py, from the jaxpr) and stablehlo (jax.export, serialized). Each export
writes `<output>.json` beside it: the config, checkpoint step, format and input/output contract.
"""

import json
import os
import shutil
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from colorgan import color
from colorgan import colorize
from colorgan import configuration
from colorgan import fileio
from colorgan import models

FORMATS = ("savedmodel", "tflite", "onnx", "stablehlo")
# What `pip install` brings a format's converter (the `export` extra has them all).
EXTRA = "pip install -e '.[export]'"
INPUT_NAME, OUTPUT_NAME = "image", "colorized"
ONNX_OPSET = 18


class ExportError(Exception):
  """A format or output that cannot be exported; the message names it and the fix."""


# ----------------------------------------------------------------------------- the function
def content_size(height, width, size: int, squash: bool):
  """colorize.content_size on traced int32 sizes: (h, w) of the photo inside size x size.

  round(n * size / long) with Python's round-half-to-even, in exact integer arithmetic.
  """
  if squash:
    return jnp.int32(size), jnp.int32(size)
  longest = jnp.maximum(height, width)

  def scaled(n):
    numerator = n * size
    quotient, remainder = numerator // longest, numerator % longest
    up = (2 * remainder > longest) | ((2 * remainder == longest) & (quotient % 2 == 1))
    return jnp.clip(quotient + up.astype(jnp.int32), 1, size)

  return scaled(height), scaled(width)


def mirror(index, n):
  """np.pad(mode="symmetric") as indices: position `index` of the padded axis reads `n`'s entry."""
  period = index % (2 * n)
  return jnp.where(period < n, period, 2 * n - 1 - period)


def bilinear_weights(out_index, out_count, in_count, in_extent: int):
  """Pillow's BILINEAR resize of one axis (in_count -> out_count samples) as a matrix.

  Pillow's filter: output o reads the inputs i around center = (o + 0.5) * in_count / out_count
  with the triangle weight max(0, 1 - |i + 0.5 - center| / max(1, scale)), normalized to sum 1
  (so shrinking averages, i.e. antialiases).

  Args:
    out_index: int32 [n]: the output positions wanted (any order; mirror() for padding).
    out_count: int32 scalar: the resize's output size.
    in_count: int32 scalar: the input's size; columns at and past it get weight 0.
    in_extent: the length of the input axis the matrix multiplies (>= in_count).

  Returns:
    float32 [n, in_extent]: resized = weights @ input.
  """
  scale = in_count.astype(jnp.float32) / out_count.astype(jnp.float32)
  support = jnp.maximum(scale, 1.0)
  center = (out_index.astype(jnp.float32) + 0.5) * scale
  inputs = jnp.arange(in_extent, dtype=jnp.int32)
  distance = (inputs.astype(jnp.float32)[None, :] + 0.5 - center[:, None]) / support
  weights = jnp.where(inputs[None, :] < in_count, jnp.maximum(0.0, 1.0 - jnp.abs(distance)), 0.0)
  return weights / jnp.sum(weights, axis=1, keepdims=True)


def _in_gamut(linear_rgb):
  tolerance = colorize._GAMUT_TOLERANCE  # pylint: disable=protected-access  (one definition)
  return ((jnp.min(linear_rgb, axis=-1) >= -tolerance)
          & (jnp.max(linear_rgb, axis=-1) <= 1 + tolerance))


def compose(l, a, b):
  """colorize.compose: L, a, b [H, W] (Lab units) -> uint8 sRGB [H, W, 3] keeping L and hue.

  Every pixel runs the chroma bisection (a traced program has no data-dependent subset); in-gamut
  pixels keep their color.
  """
  lab = lambda s: jnp.stack([l, a * s, b * s], axis=-1)  # noqa: E731
  linear = color.lab_to_linear_rgb(lab(1.0))
  lo, hi = jnp.zeros_like(l), jnp.ones_like(l)  # in gamut / out of gamut
  for _ in range(colorize._GAMUT_BISECTIONS):  # pylint: disable=protected-access
    mid = 0.5 * (lo + hi)
    fits = _in_gamut(color.lab_to_linear_rgb(lab(mid)))
    lo, hi = jnp.where(fits, mid, lo), jnp.where(fits, hi, mid)
  linear = jnp.where(_in_gamut(linear)[..., None], linear, color.lab_to_linear_rgb(lab(lo)))
  srgb = color.linear_to_srgb(jnp.clip(linear, 0.0, 1.0))
  return jnp.round(srgb * 255.0).astype(jnp.uint8)


def colorize_image(apply_generator: Callable, rgb, *, size: int, squash: bool):
  """--mode=colorize's result for one photo, traceable with a dynamic height and width.

  Args:
    apply_generator: model-scale L [1, size, size, 1] -> model-scale ab [1, size, size, 2].
    rgb: uint8 [H, W, 3]; its color is discarded.
    size: the generator's input size.
    squash: data.resize_mode == "resize": the photo squashed to size x size, not padded.

  Returns:
    uint8 [H, W, 3]: the colorized photo, with rgb's own lightness.
  """
  height, width = rgb.shape[0], rgb.shape[1]
  h_in, w_in = jnp.asarray(height, jnp.int32), jnp.asarray(width, jnp.int32)
  l = jnp.unstack(color.rgb_to_lab(rgb.astype(jnp.float32) / 255.0), axis=-1)[0]  # [H, W]
  h, w = content_size(h_in, w_in, size, squash)
  # colorize.model_input: resize to (h, w), then mirror-pad to size x size (Pillow: rows first).
  positions = jnp.arange(size, dtype=jnp.int32)
  down_x = bilinear_weights(mirror(positions, w), w, w_in, width)  # [size, W]
  down_y = bilinear_weights(mirror(positions, h), h, h_in, height)  # [size, H]
  small = down_y @ (l @ down_x.T)  # [size, size]
  ab = apply_generator(color.scale_l(small)[None, :, :, None])[0]  # [size, size, 2]
  # colorize.upsample_ab: the photo's (h, w) corner of ab, resized to (H, W).
  up_x = bilinear_weights(jnp.arange(width, dtype=jnp.int32), w_in, w, size)  # [W, size]
  up_y = bilinear_weights(jnp.arange(height, dtype=jnp.int32), h_in, h, size)  # [H, size]
  a, b = (up_y @ (channel @ up_x.T) for channel in jnp.unstack(color.unscale_ab(ab), axis=-1))
  return compose(l, a, b)


def inference_generator(config: ml_collections.ConfigDict):
  """The run's generator for export: plain convolutions (the fast_layers matmul formulation has the
  same parameters and outputs, and its im2col reshapes would only obscure the exported graph)."""
  config = ml_collections.ConfigDict(config.to_dict())
  if "fast_layers" in config.model:
    config.model.fast_layers = False
  return models.create_generator(config)


def colorize_function(config: ml_collections.ConfigDict, g_variables: dict,
                      size: int | None = None) -> Callable:
  """uint8 [H, W, 3] -> uint8 [H, W, 3] with the weights as constants (what is exported)."""
  size = size or config.image_size
  generator = inference_generator(config)
  g_variables = jax.device_get(g_variables)
  apply = lambda l: generator.apply(g_variables, l, train=False)  # noqa: E731
  squash = config.data.resize_mode == "resize"
  return lambda rgb: colorize_image(apply, rgb, size=size, squash=squash)
