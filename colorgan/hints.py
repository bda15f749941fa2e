"""Color hints, as in Zhang et al. 2017 ("Real-Time User-Guided Image Colorization with Learned
Deep Priors").

A hints generator (config.hints.enabled) sees, beside L, a hint map [B, H, W, 3]: channels 0-1 the
hint's ab at model scale (color.scale_ab, as the targets) where a color is given and 0 elsewhere,
channel 2 the mask, 1 where a color is given. The hints come from:
  training    `simulate`, inside the jitted step from the step's rng: per photo a geometric number
              of points (a share of the photos gets none), locations biased to the center, squares
              of 1-9 px whose color is the photo's mean ab under them (config.hints.*).
  evaluation  `ground_truth_hints`: a given number of points drawn the same way, from EVAL_SPEC and
              EVAL_SEED per image index, so every run and every model is scored on the same points.
  people      colorgan.inference.user_hints: a JSON file of points or a PNG scribble over the photo,
              in photo pixels, mapped onto the model's input grid as the photo itself is mapped.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

CHANNELS = 3  # a, b, mask
EVAL_SEED = 2017


class HintSpec(NamedTuple):
  """How hints are drawn (config.hints); static in the jitted step."""

  p: float  # points per image ~ geometric(p) on 1, 2, ...
  no_hint_share: float  # share of images with no point
  max_points: int  # the cap of the geometric draw
  min_patch_size: int
  max_patch_size: int
  center_sigma: float  # of the location's Gaussian, in image sides; 0: uniform


# Evaluation's points, for every run whatever its config.hints: the paper's distribution (the
# count fields are unused: the count is given).
EVAL_SPEC = HintSpec(
  p=1 / 8, no_hint_share=0.0, max_points=64, min_patch_size=1, max_patch_size=9, center_sigma=0.25
)


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether the run's generator takes hints (False for configs saved before hints existed)."""
  hints = config.get("hints")
  return bool(hints is not None and hints.get("enabled", False))


def create_spec(config: ml_collections.ConfigDict) -> HintSpec | None:
  """config.hints as a HintSpec; None when hints are off."""
  if not enabled(config):
    return None
  cfg = config.hints
  return HintSpec(
    p=float(cfg.p),
    no_hint_share=float(cfg.no_hint_share),
    max_points=int(cfg.max_points),
    min_patch_size=int(cfg.min_patch_size),
    max_patch_size=int(cfg.max_patch_size),
    center_sigma=float(cfg.center_sigma),
  )


def no_hints(l: jax.Array) -> jax.Array:
  """The empty hint map for L [..., H, W, 1]: [..., H, W, 3] zeros (automatic colorization)."""
  return jnp.zeros(l.shape[:-1] + (CHANNELS,), jnp.float32)


def generator_input(l: jax.Array, hints: jax.Array | None, use_hints: bool) -> jax.Array:
  """What a generator's first layer sees: L [B, H, W, 1], or L and the hint map [B, H, W, 4].

  Raises:
    ValueError: hints given to a generator without hint inputs.
  """
  if not use_hints:
    if hints is not None:
      raise ValueError("this generator was built without hint inputs (config.hints.enabled=False)")
    return l
  return jnp.concatenate([l, no_hints(l) if hints is None else hints.astype(l.dtype)], axis=-1)


# ----------------------------------------------------------------------------- drawing (jax)
def _location(key: jax.Array, side: int, center_sigma: float) -> jax.Array:
  """A pixel index in [0, side): the center-biased Gaussian truncated to the image, or uniform."""
  if center_sigma > 0:
    half = 0.5 / center_sigma
    position = 0.5 + center_sigma * jax.random.truncated_normal(key, -half, half)
  else:
    position = jax.random.uniform(key)
  return jnp.clip(jnp.floor(position * side).astype(jnp.int32), 0, side - 1)


def sample_points(
  key: jax.Array, num_points: int, height: int, width: int, spec: HintSpec
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """num_points squares in one image: (top, left, size), each int32 [num_points].

  Point i comes from fold_in(key, i) alone: the first n of any longer draw are the same points. Its
  center is drawn as `_location`; the square (side uniform in [min_patch_size, max_patch_size]) is
  moved inside the image where it would cross an edge.
  """

  def one(i):
    k_y, k_x, k_size = jax.random.split(jax.random.fold_in(key, i), 3)
    size = jax.random.randint(k_size, (), spec.min_patch_size, spec.max_patch_size + 1)
    y, x = _location(k_y, height, spec.center_sigma), _location(k_x, width, spec.center_sigma)
    top = jnp.clip(y - (size - 1) // 2, 0, height - size)
    left = jnp.clip(x - (size - 1) // 2, 0, width - size)
    return top, left, size

  return jax.vmap(one)(jnp.arange(num_points))


def hint_map(
  ab: jax.Array, top: jax.Array, left: jax.Array, size: jax.Array, active: jax.Array, max_size: int
) -> jax.Array:
  """The hint map of one image from its squares: each active square gets the mean ab under it.

  Args:
    ab: [H, W, 2] the image's ab (model scale).
    top, left, size: int [P] the squares (inside the image).
    active: bool [P]: which squares are hints.
    max_size: a static bound of `size`.

  Returns:
    [H, W, 3]: the mean ab of the square covering the pixel (of the last one where squares overlap)
    and the mask.
  """
  height, width = ab.shape[:2]
  offsets = jnp.arange(max_size)
  rows = jnp.minimum(top[:, None] + offsets, height - 1)  # [P, K]
  cols = jnp.minimum(left[:, None] + offsets, width - 1)
  inside = offsets < size[:, None]  # [P, K]
  cells = inside[:, :, None] & inside[:, None, :]  # [P, K, K]
  window = ab[rows[:, :, None], cols[:, None, :]]  # [P, K, K, 2]
  means = (
    jnp.sum(jnp.where(cells[..., None], window, 0.0), axis=(1, 2))
    / jnp.square(size).astype(jnp.float32)[:, None]
  )  # [P, 2]
  # Each pixel's owner: 1 + the index of the last active square over it, 0 for none. A max is
  # order-independent, so the scatter gives the same map on every backend (resume stays bit-exact).
  owners = jnp.where(
    cells & active[:, None, None], jnp.arange(1, len(top) + 1, dtype=jnp.int32)[:, None, None], 0
  )
  owner = jnp.zeros((height, width), jnp.int32).at[rows[:, :, None], cols[:, None, :]].max(owners)
  mask = owner > 0
  values = jnp.where(mask[..., None], means[jnp.maximum(owner - 1, 0)], 0.0)
  return jnp.concatenate([values, mask[..., None].astype(jnp.float32)], axis=-1)


def _draw_count(key: jax.Array, spec: HintSpec) -> jax.Array:
  k_count, k_none = jax.random.split(key)
  count = jnp.minimum(jax.random.geometric(k_count, spec.p, dtype=jnp.int32), spec.max_points)
  return jnp.where(jax.random.bernoulli(k_none, spec.no_hint_share), 0, count)


def simulate(rng: jax.Array, ab: jax.Array, spec: HintSpec) -> jax.Array:
  """Training's hints, drawn from the images' own colors (Zhang et al. 2017, section 3.2).

  Args:
    rng: the step's hint key (deterministic per seed and step).
    ab: [B, H, W, 2] the images' ab (model scale).
    spec: the distribution (config.hints).

  Returns:
    The hint map [B, H, W, 3].
  """
  height, width = ab.shape[1:3]

  def one(key, image_ab):
    k_count, k_points = jax.random.split(key)
    top, left, size = sample_points(k_points, spec.max_points, height, width, spec)
    active = jnp.arange(spec.max_points) < _draw_count(k_count, spec)
    return hint_map(image_ab, top, left, size, active, spec.max_patch_size)

  return jax.vmap(one)(jax.random.split(rng, ab.shape[0]), ab)


def ground_truth_hints(
  ab: jax.Array, image_index: jax.Array, count: jax.Array, max_count: int
) -> jax.Array:
  """Evaluation's hints: the first `count` of max_count points of EVAL_SPEC, per image index.

  Args:
    ab: [B, H, W, 2] the images' ab (model scale).
    image_index: int [B], each image's index in the eval split: its points' seed.
    count: int scalar (may be traced), <= max_count.
    max_count: static.

  Returns:
    The hint map [B, H, W, 3]; the points of count n are among those of any larger count.
  """
  height, width = ab.shape[1:3]
  base = jax.random.key(EVAL_SEED)

  def one(index, image_ab):
    top, left, size = sample_points(
      jax.random.fold_in(base, index), max_count, height, width, EVAL_SPEC
    )
    active = jnp.arange(max_count) < count
    return hint_map(image_ab, top, left, size, active, EVAL_SPEC.max_patch_size)

  return jax.vmap(one)(image_index, ab)
