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
  people      `read_user_hints`: a JSON file of points or a PNG scribble over the photo, in photo
              pixels; `to_grid` maps them onto the model's input grid as the photo itself is mapped.
"""

import json
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageOps

from colorgan import color

CHANNELS = 3  # a, b, mask
EVAL_SEED = 2017
# Pixels of a PNG scribble at least this opaque are hints (a stroke's antialiased edge is not).
MIN_ALPHA = 128
_EXIF_ORIENTATION = 0x0112


class HintSpec(NamedTuple):
  """How hints are drawn (config.hints); static in the jitted step."""
  p: float              # points per image ~ geometric(p) on 1, 2, ...
  no_hint_share: float  # share of images with no point
  max_points: int       # the cap of the geometric draw
  min_patch_size: int
  max_patch_size: int
  center_sigma: float   # of the location's Gaussian, in image sides; 0: uniform


# Evaluation's points, for every run whatever its config.hints: the paper's distribution (the
# count fields are unused: the count is given).
EVAL_SPEC = HintSpec(p=1 / 8, no_hint_share=0.0, max_points=64, min_patch_size=1, max_patch_size=9,
                     center_sigma=0.25)


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether the run's generator takes hints (False for configs saved before hints existed)."""
  hints = config.get("hints")
  return bool(hints is not None and hints.get("enabled", False))


def create_spec(config: ml_collections.ConfigDict) -> HintSpec | None:
  """config.hints as a HintSpec; None when hints are off."""
  if not enabled(config):
    return None
  cfg = config.hints
  return HintSpec(p=float(cfg.p), no_hint_share=float(cfg.no_hint_share),
                  max_points=int(cfg.max_points), min_patch_size=int(cfg.min_patch_size),
                  max_patch_size=int(cfg.max_patch_size), center_sigma=float(cfg.center_sigma))


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


def sample_points(key: jax.Array, num_points: int, height: int, width: int,
                  spec: HintSpec) -> tuple[jax.Array, jax.Array, jax.Array]:
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


def hint_map(ab: jax.Array, top: jax.Array, left: jax.Array, size: jax.Array, active: jax.Array,
             max_size: int) -> jax.Array:
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
  means = (jnp.sum(jnp.where(cells[..., None], window, 0.0), axis=(1, 2))
           / jnp.square(size).astype(jnp.float32)[:, None])  # [P, 2]
  # Each pixel's owner: 1 + the index of the last active square over it, 0 for none. A max is
  # order-independent, so the scatter gives the same map on every backend (resume stays bit-exact).
  owners = jnp.where(cells & active[:, None, None],
                     jnp.arange(1, len(top) + 1, dtype=jnp.int32)[:, None, None], 0)
  owner = jnp.zeros((height, width), jnp.int32).at[
      rows[:, :, None], cols[:, None, :]].max(owners)
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


def ground_truth_hints(ab: jax.Array, image_index: jax.Array, count: jax.Array,
                       max_count: int) -> jax.Array:
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
    top, left, size = sample_points(jax.random.fold_in(base, index), max_count, height, width,
                                    EVAL_SPEC)
    active = jnp.arange(max_count) < count
    return hint_map(image_ab, top, left, size, active, EVAL_SPEC.max_patch_size)

  return jax.vmap(one)(image_index, ab)



# ----------------------------------------------------------------------------- people's hints
class HintError(ValueError):
  """A hint file or folder that cannot be used; the message (one line) names it and the fix."""


class UserHints(NamedTuple):
  """Hint pixels of a photo, in its pixel coordinates (after its EXIF orientation)."""
  rows: np.ndarray  # int64 [N]
  cols: np.ndarray  # int64 [N]
  ab: np.ndarray    # float32 [N, 2], Lab units: the hint colors' own ab (the photo keeps its L)


def rgb_to_ab(rgb: np.ndarray) -> np.ndarray:
  """uint8 RGB [N, 3] -> ab [N, 2] in Lab units (colorgan.color), converting each color once."""
  colors, inverse = np.unique(np.asarray(rgb, np.uint8).reshape(-1, 3), axis=0, return_inverse=True)
  ab = np.asarray(color.rgb_to_lab(colors.astype(np.float32) / 255.0))[:, 1:]
  return ab[inverse.reshape(-1)].astype(np.float32)


def photo_size(path: str) -> tuple[int, int] | None:
  """(height, width) of a photo as colorize sees it (EXIF orientation applied), from its header;
  None when it cannot be read (colorize reports that photo itself)."""
  try:
    with Image.open(path) as image:
      width, height = image.size
      if image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):  # a quarter turn
        width, height = height, width
  except Exception:  # pylint: disable=broad-except  (not an image: load_photo names it later)
    return None
  return height, width


def _whole(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _json_point(point, where: str, height: int, width: int) -> tuple[int, int, list, int]:
  """One entry of "points", checked: (x, y, rgb, size)."""
  if not isinstance(point, dict):
    raise HintError(f"{where} is not an object: write {{\"x\": 120, \"y\": 64, \"rgb\": [200, 30, "
                    "40], \"size\": 5}")
  missing = [key for key in ("x", "y", "rgb") if key not in point]
  if missing:
    raise HintError(f"{where} lacks \"{missing[0]}\": each point needs x, y (pixels of the photo) "
                    "and rgb (size is optional, 1 by default)")
  unknown = sorted(set(point) - {"x", "y", "rgb", "size"})
  if unknown:
    raise HintError(f"{where} has an unknown key \"{unknown[0]}\": the keys are x, y, rgb, size")
  x, y, rgb, size = point["x"], point["y"], point["rgb"], point.get("size", 1)
  for key, value in (("x", x), ("y", y)):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
      raise HintError(f"{where}: \"{key}\"={value!r} is not a number of pixels")
  if not 0 <= x < width or not 0 <= y < height:
    raise HintError(f"{where} at (x={x}, y={y}) is outside the photo ({width}x{height} pixels): "
                    f"x must be in [0, {width}) and y in [0, {height})")
  if not (isinstance(rgb, list) and len(rgb) == 3
          and all(_whole(c) and 0 <= c <= 255 for c in rgb)):
    raise HintError(f"{where}: \"rgb\"={rgb!r} is not a color: write three whole numbers from 0 to "
                    "255, e.g. [200, 30, 40]")
  if not _whole(size) or size < 1:
    raise HintError(f"{where}: \"size\"={size!r} must be a whole number of pixels >= 1")
  return int(x), int(y), rgb, size


def parse_points(data, height: int, width: int, *, what: str) -> UserHints:
  """{"points": [{"x", "y", "rgb", "size"}, ...]} (parsed JSON): squares of `size` photo pixels
  centered on (x, y), cut at the photo's edges, in color `rgb`.

  Raises:
    HintError: the first problem, its message starting with `what` (e.g. "--hints=p.json").
  """
  if not isinstance(data, dict) or not isinstance(data.get("points"), list):
    raise HintError(f"{what} is not a hint file: write {{\"points\": [{{\"x\": 120, \"y\": 64, "
                    "\"rgb\": [200, 30, 40], \"size\": 5}, ...]}")
  if not data["points"]:
    raise HintError(f"{what} holds no point: give at least one, or no hints for this photo")
  rows, cols, rgbs = [], [], []
  for i, point in enumerate(data["points"]):
    x, y, rgb, size = _json_point(point, f"{what}: point {i}", height, width)
    top, left = max(0, y - (size - 1) // 2), max(0, x - (size - 1) // 2)
    bottom, right = min(height, y + size // 2 + 1), min(width, x + size // 2 + 1)
    r, c = np.meshgrid(np.arange(top, bottom), np.arange(left, right), indexing="ij")
    rows.append(r.ravel())
    cols.append(c.ravel())
    rgbs.append(np.broadcast_to(np.asarray(rgb, np.uint8), (r.size, 3)))
  return UserHints(np.concatenate(rows), np.concatenate(cols), rgb_to_ab(np.concatenate(rgbs)))


def read_json_hints(path: str, height: int, width: int) -> UserHints:
  """A JSON hint file (parse_points) for a photo of height x width pixels. Raises HintError."""
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, UnicodeDecodeError) as e:
    raise HintError(f"--hints={path} cannot be read: {getattr(e, 'strerror', None) or e}") from None
  except json.JSONDecodeError as e:
    raise HintError(f"--hints={path} is not JSON ({e.msg} at line {e.lineno} column {e.colno})"
                    ) from None
  return parse_points(data, height, width, what=f"--hints={path}")


def read_png_hints(path: str, height: int, width: int) -> UserHints:
  """A scribble of the photo's size: its pixels at least half opaque (alpha >= MIN_ALPHA) are hints
  in their own color. Raises HintError."""
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      if image.size != (width, height):
        raise HintError(f"--hints={path} is {image.size[0]}x{image.size[1]} pixels but the photo "
                        f"is {width}x{height}: paint the hints on a transparent layer of the "
                        "photo's size")
      if "A" not in image.getbands() and "transparency" not in image.info:
        raise HintError(f"--hints={path} has no transparency, so every pixel would be a hint: save "
                        "the hints alone on a transparent background (RGBA PNG)")
      rgba = np.asarray(image.convert("RGBA"))
  except HintError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (Pillow raises many kinds on bad files)
    raise HintError(f"--hints={path} cannot be read as an image "
                    f"({' '.join(str(e).split()) or type(e).__name__})") from None
  rows, cols = np.nonzero(rgba[..., 3] >= MIN_ALPHA)
  if not len(rows):
    raise HintError(f"--hints={path} holds no hint: no pixel is at least half opaque (alpha >= "
                    f"{MIN_ALPHA})")
  return UserHints(rows, cols, rgb_to_ab(rgba[rows, cols, :3]))


HINT_EXTENSIONS = (".json", ".png")


def _check_kind(path: str) -> None:
  if os.path.splitext(path)[1].lower() not in HINT_EXTENSIONS:
    raise HintError(f"--hints={path} is neither .json (points) nor .png (a scribble)")


def read_user_hints(path: str, height: int, width: int) -> UserHints:
  """The hints in a .json or .png file for a photo of height x width pixels. Raises HintError."""
  _check_kind(path)
  if path.lower().endswith(".json"):
    return read_json_hints(path, height, width)
  return read_png_hints(path, height, width)


def _cells(coords: np.ndarray, photo_side: int, grid_side: int) -> tuple[np.ndarray, np.ndarray]:
  """The first and last grid cells that photo pixels [c, c + 1) overlap, on one axis."""
  return coords * grid_side // photo_side, -(-(coords + 1) * grid_side // photo_side) - 1


def to_grid(hints: UserHints, photo_shape: tuple[int, int], content_shape: tuple[int, int],
            size: int) -> np.ndarray:
  """A photo's hints on the generator's size x size input grid: [size, size, 3] float32.

  The photo fills the grid's top-left content_shape (h, w) cells, as colorize.model_input puts it;
  a cell is a hint where any hint pixel overlaps it, with the mean ab of those pixels (model scale).
  The padding around the photo gets none.
  """
  (height, width), (h, w) = photo_shape, content_shape
  y_lo, y_hi = _cells(hints.rows, height, h)
  x_lo, x_hi = _cells(hints.cols, width, w)
  counts = np.zeros(size * size, np.float64)
  sums = np.zeros((size * size, 2), np.float64)
  for dy in range(int(np.max(y_hi - y_lo, initial=0)) + 1):
    for dx in range(int(np.max(x_hi - x_lo, initial=0)) + 1):
      ok = (y_lo + dy <= y_hi) & (x_lo + dx <= x_hi)
      cell = ((y_lo + dy) * size + x_lo + dx)[ok]
      counts += np.bincount(cell, minlength=size * size)
      for channel in range(2):
        sums[:, channel] += np.bincount(cell, weights=hints.ab[ok, channel], minlength=size * size)
  mask = counts > 0
  ab = np.where(mask[:, None], sums / np.maximum(counts, 1)[:, None], 0.0)
  grid = np.concatenate([color.scale_ab(ab), mask[:, None]], axis=-1)
  return grid.reshape(size, size, CHANNELS).astype(np.float32)


def match_hint_files(hints_path: str, sources: list[str], outputs: list[str],
                     output_dir: str) -> dict[str, str]:
  """--hints for the photos of a colorize plan: {photo: its hint file}.

  Args:
    hints_path: --hints: a .json or .png file when there is one photo, else a folder holding
      <name>.json or <name>.png per photo with hints, <name> the photo's output path below
      output_dir without its extension (photos/sub/cat.jpg -> sub/cat.json).
    sources, outputs: the plan's photos and their outputs, in order.
    output_dir: the plan's output folder.

  Raises:
    HintError: no such path, a file for several photos, a photo with both a .json and a .png, or a
      hint file that matches no photo.
  """
  if os.path.isfile(hints_path):
    if len(sources) != 1:
      raise HintError(f"--hints={hints_path} is one photo's hints but the inputs are "
                      f"{len(sources)} photos: give a folder holding <name>.json or <name>.png "
                      "per photo")
    _check_kind(hints_path)
    return {sources[0]: hints_path}
  if not os.path.isdir(hints_path):
    raise HintError(f"--hints={hints_path}: no such file or folder")
  found, matched = {}, set()
  for source, output in zip(sources, outputs):
    stem = os.path.splitext(os.path.relpath(output, output_dir))[0]
    candidates = [stem + ext for ext in HINT_EXTENSIONS
                  if os.path.isfile(os.path.join(hints_path, stem + ext))]
    if len(candidates) > 1:
      raise HintError(f"--hints={hints_path} holds both {candidates[0]} and {candidates[1]} for "
                      f"{source}: keep one")
    if candidates:
      found[source] = os.path.join(hints_path, candidates[0])
      matched.add(os.path.normpath(candidates[0]))
  if not found:
    raise HintError(f"--hints={hints_path} holds no hint file for any input photo: name them as "
                    "the photos' outputs below --output_dir, <name>.json or <name>.png")
  for root, dirs, names in os.walk(hints_path):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(names):
      rel = os.path.normpath(os.path.relpath(os.path.join(root, name), hints_path))
      if (os.path.splitext(name)[1].lower() in HINT_EXTENSIONS and not name.startswith(".")
          and rel not in matched):
        raise HintError(f"--hints={hints_path}: {rel} matches no input photo (a photo's hint file "
                        "is named as its output below --output_dir: sub/cat.json for "
                        "photos/sub/cat.jpg)")
  return found


def check_hint_files(hint_files: dict[str, str]) -> None:
  """Reads every hint file against its photo's size (header only), before any photo is colorized.

  Raises:
    HintError: the first file that cannot be used.
  """
  for source, path in hint_files.items():
    shape = photo_size(source)
    if shape is not None:  # an unreadable photo is reported, and skipped, when it is colorized
      read_user_hints(path, *shape)
