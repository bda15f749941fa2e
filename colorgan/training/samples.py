"""Sample grids drawn during training: a few eval photos as gray | generated | real, one per row."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from colorgan import color
from colorgan import fileio
from colorgan import models


def colorize_batch(generator: nn.Module, variables: dict, rgb_uint8: jax.Array):
  """uint8 RGB [B, H, W, 3] -> (gray, generated, real) float RGB in [0, 1], each [B, H, W, 3].

  `variables` are the generator's {"params", "batch_stats"} (loop.inference_variables).
  """
  l, real_ab = color.rgb_uint8_to_model_lab(rgb_uint8)
  fake_ab = models.predict_ab(generator, variables, l)
  gray = color.model_lab_to_rgb(l, jnp.zeros_like(real_ab))
  return gray, color.model_lab_to_rgb(l, fake_ab), color.model_lab_to_rgb(l, real_ab)


def sample_grid(gray: np.ndarray, generated: np.ndarray, real: np.ndarray) -> np.ndarray:
  """One row per photo: gray | generated | real, with a 2-px white gutter. Returns uint8 [H, W, 3]."""
  rows = []
  for images in zip(gray, generated, real):
    parts = []
    for image in images:
      parts += [image, np.ones((image.shape[0], 2, 3), image.dtype)]
    rows += [np.concatenate(parts[:-1], axis=1)]
    rows += [np.ones((2, rows[-1].shape[1], 3), rows[-1].dtype)]
  grid = np.concatenate(rows[:-1], axis=0)
  return np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)


def write_samples(workdir: str, step: int, grid: np.ndarray, writer) -> str:
  """Writes workdir/samples/step_<N>.png and the grid to TensorBoard; returns the file's path."""
  path = os.path.join(workdir, "samples", f"step_{step:07d}.png")
  with fileio.atomic_path(path) as tmp:
    Image.fromarray(grid).save(tmp, format="PNG")
  writer.write_images(step, {"samples": grid[None]})
  return path
