"""The classification head's ab bins (Zhang et al. 2016, "Colorful Image Colorization"; as CT2 uses it).

ab is quantized on a grid of GRID Lab units; the bins are the grid cells that some 8-bit sRGB color
falls in (D65; the colors every 4 levels of each channel, and 255, give the same 261 cells as all
16.7 million; Zhang et al. count 313 on the hull of their data). Targets are soft: each pixel's ab
spread over its NEAREST closest bin centers with Gaussian weights (SIGMA). Rare colors are weighted
up by the inverse of the smoothed prior mixed with the uniform, ((1 - lambda) p + lambda / Q)^-1,
normalized so that its mean under the prior is 1.
A prediction is decoded as the annealed mean, softmax(logits / T) over the bin centers: T = 1 is the
mean (the accurate end), smaller T moves toward the mode (more vivid).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from colorgan import color

GRID = 10.0
NEAREST = 5
SIGMA = 5.0


@functools.cache
def centers() -> np.ndarray:
  """The bin centers, [Q, 2] (a, b) in Lab units, Q = 261."""
  levels = np.unique(np.r_[0:256:4, 255]).astype(np.float32) / 255.0
  rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
  ab = color.rgb_to_lab(rgb, np)[:, 1:]
  return (np.unique(np.round(ab / GRID), axis=0) * GRID).astype(np.float32)


def num_bins() -> int:
  return len(centers())


def decode(logits: jax.Array, temperature=1.0) -> jax.Array:
  """The annealed mean: logits [..., Q] -> ab [..., 2] at model scale (color.scale_ab)."""
  probs = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  return color.scale_ab(probs @ jnp.asarray(centers()))


def soft_encode(ab_lab: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(soft targets [..., Q], nearest bin [...]) of ab [..., 2] in Lab units: the NEAREST closest
  bins, with Gaussian weights of their distances (bins tied in distance count together)."""
  c = jnp.asarray(centers())
  # |ab - c|^2 as |ab|^2 - 2 ab.c + |c|^2: one [..., Q] product, no [..., Q, 2] difference.
  d2 = jnp.sum(ab_lab**2, -1, keepdims=True) - 2.0 * ab_lab @ c.T + jnp.sum(c**2, -1)
  # The NEAREST-th smallest distance by repeated minima ([..., Q] passes; XLA:CPU's top_k sorts).
  rest, nearest = d2, jnp.argmin(d2, axis=-1)
  for _ in range(NEAREST - 1):
    rest = jnp.where(rest <= jnp.min(rest, axis=-1, keepdims=True), jnp.inf, rest)
  kept = d2 <= jnp.min(rest, axis=-1, keepdims=True)
  closest = jnp.min(d2, axis=-1, keepdims=True)
  w = jnp.where(kept, jnp.exp(-(d2 - closest) / (2 * SIGMA**2)), 0.0)
  return w / jnp.sum(w, axis=-1, keepdims=True), nearest


def nearest(ab_lab: np.ndarray) -> np.ndarray:
  """The index of each ab's nearest bin center (numpy: the prior's counts)."""
  flat = np.asarray(ab_lab, np.float32).reshape(-1, 2)
  out = np.empty(len(flat), np.int64)
  for start in range(0, len(flat), 65536):  # [chunk, Q] distances at a time
    d2 = np.sum((flat[start : start + 65536, None, :] - centers()) ** 2, axis=-1)
    out[start : start + 65536] = np.argmin(d2, axis=-1)
  return out.reshape(np.shape(ab_lab)[:-1])


def smoothed_prior(counts: np.ndarray) -> np.ndarray:
  """The bins' empirical distribution smoothed with a Gaussian (SIGMA) over the ab plane."""
  p = counts / max(counts.sum(), 1)
  d2 = np.sum((centers()[:, None] - centers()[None]) ** 2, axis=-1)
  kernel = np.exp(-d2 / (2 * SIGMA**2))
  smooth = kernel @ p
  return smooth / smooth.sum()


def rebalancing_weights(prior: np.ndarray, mix: float = 0.5) -> np.ndarray:
  """w = ((1 - mix) * prior + mix / Q)^-1, scaled so that sum(prior * w) = 1 (mean 1 under it)."""
  w = 1.0 / ((1.0 - mix) * prior + mix / len(prior))
  return (w / np.sum(prior * w)).astype(np.float32)
