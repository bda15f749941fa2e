"""People's color hints for colorize (and serve), in a photo's own pixels.

A hint file is a JSON file of points or a PNG scribble over the photo (`read_user_hints`);
`match_hint_files` pairs --hints with the photos of a colorize plan, and `to_grid` maps a photo's
hints onto the generator's input grid as colorgan.inference.photo maps the photo itself. The hint
map's layout is colorgan.hints' (channels 0-1 ab at model scale, channel 2 the mask).
"""

import json
import math
import os
import re
from typing import NamedTuple

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageOps

from colorgan import color
from colorgan import errors
from colorgan import hints as hints_lib

# Pixels of a PNG scribble at least this opaque are hints (a stroke's antialiased edge is not).
MIN_ALPHA = 128
HINT_EXTENSIONS = (".json", ".png")
_EXIF_ORIENTATION = 0x0112


class UserHints(NamedTuple):
  """Hint pixels of a photo, in its pixel coordinates (after its EXIF orientation)."""

  rows: np.ndarray  # int64 [N]
  cols: np.ndarray  # int64 [N]
  ab: np.ndarray  # float32 [N, 2], Lab units: the hint colors' own ab (the photo keeps its L)


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
    raise errors.HintError(
      f'{where} is not an object: write {{"x": 120, "y": 64, "rgb": [200, 30, 40], "size": 5}}'
    )
  missing = [key for key in ("x", "y", "rgb") if key not in point]
  if missing:
    raise errors.HintError(
      f'{where} lacks "{missing[0]}": each point needs x, y (pixels of the '
      "photo) and rgb (size is optional, 1 by default)"
    )
  unknown = sorted(set(point) - {"x", "y", "rgb", "size"})
  if unknown:
    raise errors.HintError(
      f'{where} has an unknown key "{unknown[0]}": the keys are x, y, rgb, size'
    )
  x, y, rgb, size = point["x"], point["y"], point["rgb"], point.get("size", 1)
  for key, value in (("x", x), ("y", y)):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
      raise errors.HintError(f'{where}: "{key}"={value!r} is not a number of pixels')
  if not 0 <= x < width or not 0 <= y < height:
    raise errors.HintError(
      f"{where} at (x={x}, y={y}) is outside the photo ({width}x{height} "
      f"pixels): x must be in [0, {width}) and y in [0, {height})"
    )
  if not (
    isinstance(rgb, list) and len(rgb) == 3 and all(_whole(c) and 0 <= c <= 255 for c in rgb)
  ):
    raise errors.HintError(
      f'{where}: "rgb"={rgb!r} is not a color: write three whole numbers '
      "from 0 to 255, e.g. [200, 30, 40]"
    )
  if not _whole(size) or size < 1:
    raise errors.HintError(f'{where}: "size"={size!r} must be a whole number of pixels >= 1')
  return int(x), int(y), rgb, size


def parse_points(data, height: int, width: int, *, what: str) -> UserHints:
  """{"points": [{"x", "y", "rgb", "size"}, ...]} (parsed JSON): squares of `size` photo pixels
  centered on (x, y), cut at the photo's edges, in color `rgb`.

  Raises:
    errors.HintError: the first problem, its message starting with `what` (e.g. "--hints=p.json").
  """
  if not isinstance(data, dict) or not isinstance(data.get("points"), list):
    raise errors.HintError(
      f'{what} is not a hint file: write {{"points": [{{"x": 120, '
      '"y": 64, "rgb": [200, 30, 40], "size": 5}, ...]}'
    )
  if not data["points"]:
    raise errors.HintError(f"{what} holds no point: give at least one, or no hints for this photo")
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
  """A JSON hint file (parse_points) for a photo of height x width pixels.

  Raises:
    errors.HintError: it cannot be read, is not JSON, or is not a hint file for this photo.
  """
  return parse_points(_read_json(path), height, width, what=f"--hints={path}")


def _read_json(path: str):
  """The JSON value of a --hints file (errors.HintError: cannot be read, or not JSON)."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError) as e:
    raise errors.HintError(
      f"--hints={path} cannot be read: {getattr(e, 'strerror', None) or e}"
    ) from None
  except json.JSONDecodeError as e:
    raise errors.HintError(
      f"--hints={path} is not JSON ({e.msg} at line {e.lineno} column {e.colno})"
    ) from None


def read_png_hints(path: str, height: int, width: int) -> UserHints:
  """A scribble of the photo's size: its pixels at least half opaque (alpha >= MIN_ALPHA) are hints
  in their own color.

  Raises:
    errors.HintError: unreadable, not the photo's size, opaque, or without a hint pixel.
  """
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      if image.size != (width, height):
        raise errors.HintError(
          f"--hints={path} is {image.size[0]}x{image.size[1]} pixels but the "
          f"photo is {width}x{height}: paint the hints on a transparent layer "
          "of the photo's size"
        )
      if "A" not in image.getbands() and "transparency" not in image.info:
        raise errors.HintError(
          f"--hints={path} has no transparency, so every pixel would be a "
          "hint: save the hints alone on a transparent background (RGBA PNG)"
        )
      rgba = np.asarray(image.convert("RGBA"))
  except errors.HintError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (Pillow raises many kinds on bad files)
    raise errors.HintError(
      f"--hints={path} cannot be read as an image ({' '.join(str(e).split()) or type(e).__name__})"
    ) from None
  rows, cols = np.nonzero(rgba[..., 3] >= MIN_ALPHA)
  if not len(rows):
    raise errors.HintError(
      f"--hints={path} holds no hint: no pixel is at least half opaque (alpha >= {MIN_ALPHA})"
    )
  return UserHints(rows, cols, rgb_to_ab(rgba[rows, cols, :3]))


def _check_kind(path: str) -> None:
  if os.path.splitext(path)[1].lower() not in HINT_EXTENSIONS:
    raise errors.HintError(f"--hints={path} is neither .json (points) nor .png (a scribble)")


def read_user_hints(path: str, height: int, width: int) -> UserHints:
  """The hints in a .json or .png file for a photo of height x width pixels.

  Raises:
    errors.HintError: neither .json nor .png, or read_json_hints / read_png_hints's errors.
  """
  _check_kind(path)
  if path.lower().endswith(".json"):
    return read_json_hints(path, height, width)
  return read_png_hints(path, height, width)


def _cells(coords: np.ndarray, photo_side: int, grid_side: int) -> tuple[np.ndarray, np.ndarray]:
  """The first and last grid cells that photo pixels [c, c + 1) overlap, on one axis."""
  return coords * grid_side // photo_side, -(-(coords + 1) * grid_side // photo_side) - 1


def to_grid(
  hints: UserHints, photo_shape: tuple[int, int], content_shape: tuple[int, int], size: int
) -> np.ndarray:
  """A photo's hints on the generator's size x size input grid: [size, size, 3] float32.

  The photo fills the grid's top-left content_shape (h, w) cells, as photo.model_input puts it;
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
  return grid.reshape(size, size, hints_lib.CHANNELS).astype(np.float32)


def match_hint_files(
  hints_path: str, sources: list[str], outputs: list[str], output_dir: str
) -> dict[str, str]:
  """--hints for the photos of a colorize plan: {photo: its hint file}.

  Args:
    hints_path: --hints: a .json or .png file when there is one photo, else a folder holding
      <name>.json or <name>.png per photo with hints, <name> the photo's output path below
      output_dir without its extension (photos/sub/cat.jpg -> sub/cat.json).
    sources, outputs: the plan's photos and their outputs, in order.
    output_dir: the plan's output folder.

  Raises:
    errors.HintError: no such path, a file for several photos, a photo with both a .json and a
      .png, or a hint file that matches no photo.
  """
  if os.path.isfile(hints_path):
    if len(sources) != 1:
      raise errors.HintError(
        f"--hints={hints_path} is one photo's hints but the inputs are "
        f"{len(sources)} photos: give a folder holding <name>.json or "
        "<name>.png per photo"
      )
    _check_kind(hints_path)
    return {sources[0]: hints_path}
  if not os.path.isdir(hints_path):
    raise errors.HintError(f"--hints={hints_path}: no such file or folder")
  found, matched = {}, set()
  for source, output in zip(sources, outputs):
    stem = os.path.splitext(os.path.relpath(output, output_dir))[0]
    candidates = [
      stem + ext for ext in HINT_EXTENSIONS if os.path.isfile(os.path.join(hints_path, stem + ext))
    ]
    if len(candidates) > 1:
      raise errors.HintError(
        f"--hints={hints_path} holds both {candidates[0]} and "
        f"{candidates[1]} for {source}: keep one"
      )
    if candidates:
      found[source] = os.path.join(hints_path, candidates[0])
      matched.add(os.path.normpath(candidates[0]))
  if not found:
    raise errors.HintError(
      f"--hints={hints_path} holds no hint file for any input photo: name "
      "them as the photos' outputs below --output_dir, <name>.json or "
      "<name>.png"
    )
  for root, dirs, names in os.walk(hints_path):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(names):
      rel = os.path.normpath(os.path.relpath(os.path.join(root, name), hints_path))
      if (
        os.path.splitext(name)[1].lower() in HINT_EXTENSIONS
        and not name.startswith(".")
        and rel not in matched
      ):
        raise errors.HintError(
          f"--hints={hints_path}: {rel} matches no input photo (a photo's "
          "hint file is named as its output below --output_dir: sub/cat.json "
          "for photos/sub/cat.jpg)"
        )
  return found


def check_hint_files(hint_files: dict[str, str]) -> None:
  """Reads every hint file against its photo's size (header only), before any photo is colorized.

  Raises:
    errors.HintError: the first file that cannot be used.
  """
  for source, path in hint_files.items():
    shape = photo_size(source)
    if shape is not None:  # an unreadable photo is reported, and skipped, when it is colorized
      read_user_hints(path, *shape)


def parse_color(text: str) -> list[int]:
  """A color picker's value ("#rrggbb", "#rgb", "rgb(r, g, b)", "rgba(...)") -> [r, g, b]."""
  text = (text or "").strip()
  if re.fullmatch(r"#[0-9a-fA-F]{6}", text):
    return [int(text[i : i + 2], 16) for i in (1, 3, 5)]
  if re.fullmatch(r"#[0-9a-fA-F]{3}", text):
    return [17 * int(c, 16) for c in text[1:]]
  found = re.fullmatch(r"rgba?\(([^)]*)\)", text)
  if found:
    parts = [float(p) for p in found.group(1).replace(",", " ").split()[:3]]
    if len(parts) == 3:
      return [int(round(min(max(p, 0.0), 255.0))) for p in parts]
  raise ValueError(f"{text!r} is not a color")


def draw_hints(gray: np.ndarray, text: str | None) -> np.ndarray:
  """The gray photo with each hint's square in its color, outlined: uint8 RGB [H, W, 3] (the gray
  [H, W] itself when there is no hint)."""
  if not text:
    return gray
  image = Image.fromarray(gray).convert("RGB")
  draw = ImageDraw.Draw(image)
  for point in json.loads(text)["points"]:
    x, y, size = int(point["x"]), int(point["y"]), int(point.get("size", 1))
    half = max(size // 2, 2)  # visible even for 1-pixel hints
    box = [x - half, y - half, x + half, y + half]
    draw.rectangle(box, fill=tuple(point["rgb"]), outline="white", width=1)
    draw.rectangle([box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], outline="black", width=1)
  return np.asarray(image)


def plan_hint_files(hints: str | None, work) -> dict[str, str]:
  """--hints matched to a photo.Plan's photos and read against each photo's size: {photo: hint
  file}. Every problem is an errors.HintError here, before any photo is colorized."""
  if hints is None:
    return {}
  hint_files = match_hint_files(
    hints, [job.source for job in work.jobs], [job.output for job in work.jobs], work.output_dir
  )
  check_hint_files(hint_files)
  return hint_files


def read_keyframe_hints(
  path: str, height: int, width: int, frames: int = 0
) -> dict[int, UserHints]:
  """A video's hint file: {"frames": {"0": {"points": [...]}, "120": {...}}}, points as for photos
  (parse_points), in the pixels of the frame as a player shows it (height x width).

  Raises:
    errors.HintError: one line naming the file, the frame and the problem.
  """
  data = _read_json(path)
  if not isinstance(data, dict) or not isinstance(data.get("frames"), dict) or not data["frames"]:
    raise errors.HintError(
      f'--hints={path} is not a video hint file: write {{"frames": {{"0": '
      '{"points": [{"x": 120, "y": 64, "rgb": [200, 30, 40]}]}}}'
    )
  keyframes = {}
  for key, entry in data["frames"].items():
    if not (isinstance(key, str) and key.isdigit()) or (frames and int(key) >= frames):
      last = f" (0 to {frames - 1})" if frames else ""
      raise errors.HintError(f'--hints={path}: "{key}" is not a frame number of the video{last}')
    keyframes[int(key)] = parse_points(entry, height, width, what=f"--hints={path}: frame {key}")
  return keyframes
