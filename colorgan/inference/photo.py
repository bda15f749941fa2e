"""Photos for colorize: what to colorize and where it goes, decoding and writing, and the geometry
between a photo and the generator's square input (colorgan.inference.colorize runs the generator).

  plan          the --input files (a file; a folder, recursively; a glob) and their outputs: each
                keeps its path relative to its --input (a file: its name; a folder: the path below
                it; a glob: the path below its fixed leading folders) with the format's extension;
                no output may land on an input, and colorgan's own earlier outputs are skipped.
  load_photo    any mode (grayscale, RGB - its color is discarded -, RGBA/LA/transparent palette -
                the alpha is kept -, palette, 16-bit, CMYK), EXIF orientation applied -> the photo's
                own full-resolution lightness L (CIE Lab, as colorgan.color; 16-bit photos keep
                their precision). A bad file (corrupt, not an image, over MAX_PIXELS) is BadPhoto.
  model_input   L resized so that its long side is `size` (aspect kept) and mirror-padded to
                size x size, so photos of any shape batch together and nothing is distorted or
                cropped; with `squash` (a run trained with data.resize_mode="resize") the photo is
                squashed to the square, as it saw in training.
  upsample_ab   the predicted ab of the photo's area, upsampled (bilinear) to the original size.
  compose       the original L joined with that ab; where the Lab color lies outside the sRGB
                gamut, its chroma (not its L, not its hue) is reduced until it fits, so the output's
                L equals the input's up to uint8 rounding.
  save          written atomically, marked as colorgan's.
"""

import glob
import os
import tempfile
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import PngImagePlugin

from colorgan import color
from colorgan import errors
from colorgan import fileio
from colorgan.inference import user_hints

OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG"}
JPEG_QUALITY = 95
# Every output says it is colorgan's (PNG: a Software text chunk, JPEG: the EXIF Software tag), so
# that a rerun into an input folder recognizes its earlier outputs and does not colorize them again.
OUTPUT_MARKER = "colorgan"
_EXIF_SOFTWARE = 0x0131
# Pillow's own decompression-bomb threshold (~89.5 megapixels); larger photos are rejected before
# decoding. Colorizing needs about 40 bytes a pixel at the peak, so this caps one photo near 3.6 GB.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS

# Per-pixel work runs over blocks of this many pixels: their temporaries stay in cache, 3x faster
# than whole-photo arrays, and memory stays near the photo's own size.
_BLOCK_PIXELS = 1 << 14


class BadPhoto(Exception):
  """A file that cannot be colorized; the message says why in a few words."""


class Job(NamedTuple):
  source: str  # the input file
  output: str  # where its colorized version goes


class Plan(NamedTuple):
  jobs: list[Job]
  output_dir: str
  output_format: str  # "png" or "jpg"
  earlier_outputs: int = 0  # files among the inputs that colorgan wrote: not colorized again


class Photo(NamedTuple):
  l: np.ndarray  # float32 [H, W]: CIE L in [0, 100] at full resolution
  alpha: np.ndarray | None  # uint8 [H, W], or None
  note: str | None = None  # something the user should know, e.g. only the first frame was used


# ----------------------------------------------------------------------------- inputs -> outputs
def _is_hidden(name: str) -> bool:
  return name.startswith(".")


def _below(path: str, folder: str) -> bool:
  return os.path.realpath(path).startswith(folder + os.sep)


def _walk(folder: str, skip: str) -> list[str]:
  """Every non-hidden file below folder, sorted, except those below `skip` (the output folder)."""
  files = []
  for root, dirs, names in os.walk(folder):
    dirs[:] = sorted(
      d for d in dirs if not _is_hidden(d) and os.path.realpath(os.path.join(root, d)) != skip
    )
    files += [os.path.join(root, n) for n in sorted(names) if not _is_hidden(n)]
  return files


def _glob_base(pattern: str) -> str:
  """The leading folders of a glob that hold no wildcard: outputs keep the path below them."""
  parts = []
  for part in pattern.split(os.sep)[:-1]:
    if any(c in part for c in "*?["):
      break
    parts.append(part)
  return os.sep.join(parts) or ("." if not pattern.startswith(os.sep) else os.sep)


def _sources(spec: str, skip: str) -> list[tuple[str, str]]:
  """(file, path relative to the input's base) for one --input."""
  if os.path.isdir(spec):
    return [(f, os.path.relpath(f, spec)) for f in _walk(spec, skip)]
  if os.path.isfile(spec):
    return [(spec, os.path.basename(spec))]
  if any(c in spec for c in "*?["):
    base = _glob_base(spec)
    # Earlier outputs in an output folder below the pattern's folder are not inputs; an output folder
    # that IS the pattern's folder is left to the overwrite check.
    below_output = lambda path: skip != os.path.realpath(base) and _below(path, skip)  # noqa: E731
    found = []
    for match in sorted(glob.glob(spec, recursive=True)):
      if os.path.isdir(match):
        found += [(f, os.path.relpath(f, base)) for f in _walk(match, skip)]
      elif (
        os.path.isfile(match)
        and not _is_hidden(os.path.basename(match))
        and not below_output(match)
      ):
        found.append((match, os.path.relpath(match, base)))
    if not found:
      raise errors.PlanError(f"--input={spec}: the pattern matches no file")
    return found
  raise errors.PlanError(f"--input={spec}: no such file or folder")


def _output_names(relatives: list[str], ext: str) -> list[str]:
  """rel/name.jpg -> rel/name.<ext>; names that would collide keep their extension, then a counter."""
  plain = [os.path.splitext(r)[0] + "." + ext for r in relatives]
  counts = {}
  for name in plain:
    counts[name] = counts.get(name, 0) + 1
  names, taken = [], set()
  for rel, name in zip(relatives, plain):
    if counts[name] > 1:  # a.jpg and a.png both in the input: a.jpg.png, a.png.png
      name = f"{rel}.{ext}"
    candidate, k = name, 2
    while candidate in taken:  # the same relative path from two inputs
      candidate = f"{os.path.splitext(name)[0]}_{k}.{ext}"
      k += 1
    taken.add(candidate)
    names.append(candidate)
  return names


def plan(inputs: Sequence[str], output_dir: str, output_format: str = "png") -> Plan:
  """The files to colorize and where each one goes, checked before any work.

  Args:
    inputs: --input values: files, folders (recursive; hidden files skipped) or globs.
    output_dir: --output_dir; files of an input folder that lie below it (earlier outputs) are skipped.
    output_format: "png" or "jpg".

  Raises:
    errors.PlanError: an input that does not exist or matches nothing, no file at all, an output
      that would overwrite an input, or an output folder that cannot be created or written.
  """
  if output_format not in OUTPUT_FORMATS:
    raise errors.PlanError(f"--output_format={output_format} is not known: use png or jpg")
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise errors.PlanError(f"--output_dir={output_dir} exists and is not a folder")
  check_writable(output_dir, "--output_dir", output_dir)
  skip = os.path.realpath(output_dir)
  sources, seen, earlier_outputs = [], set(), 0
  for spec in inputs:
    for path, rel in _sources(spec, skip):
      real = os.path.realpath(path)
      if real in seen:  # the same file named twice is colorized once
        continue
      if is_colorgan_output(path):  # rerunning into an input folder must not feed on its outputs
        earlier_outputs += 1
        continue
      seen.add(real)
      sources.append((path, rel))
  if not sources:
    found = f" but {earlier_outputs} colorgan output(s)" if earlier_outputs else ""
    raise errors.PlanError(f"--input={','.join(inputs)}: no file found{found}")
  names = _output_names([rel for _, rel in sources], output_format)
  jobs = [Job(path, os.path.join(output_dir, name)) for (path, _), name in zip(sources, names)]
  for job in jobs:
    if os.path.realpath(job.output) in seen:
      raise errors.PlanError(
        f"--output_dir={output_dir} would overwrite the input {job.output}: "
        "choose an output folder that is not an input's folder"
      )
  return Plan(jobs, output_dir, output_format, earlier_outputs)


def check_writable(
  folder: str, flag: str, value: str, error: type[errors.ColorganError] = errors.PlanError
) -> None:
  """Raises `error` when files cannot be written in `folder`, or it cannot be created: checked
  before any work, so that a read-only place is one line at once, not a failure after the work
  that names an internal temporary file. Creates nothing: the nearest existing folder is probed.

  Args:
    folder: where the files will go (created by the writes when missing).
    flag: the flag that named it, e.g. "--output_dir"; value: that flag's value (for the message).
    error: the errors.ColorganError class to raise.
  """
  existing = os.path.abspath(folder)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise error(f"{flag}={value} cannot be created: {existing} is a file")
  try:  # a write, not os.access: root passes os.access on a read-only file system
    with tempfile.NamedTemporaryFile(dir=existing, prefix=".colorgan-write-test."):
      pass
  except OSError as e:
    made = "written" if existing == os.path.abspath(folder) else "created"
    raise error(
      f"{flag}={value} cannot be {made}: {e.strerror or e} (a read-only file system or "
      f"a missing permission: choose another {flag})"
    ) from None


def is_colorgan_output(path: str) -> bool:
  """Whether `path` is an image colorgan wrote (OUTPUT_MARKER in its metadata; headers only)."""
  try:
    with Image.open(path) as image:
      software = image.info.get("Software") or image.getexif().get(_EXIF_SOFTWARE) or ""
  except Exception:  # pylint: disable=broad-except  (not an image: load_photo names it later)
    return False
  return isinstance(software, str) and software.startswith(OUTPUT_MARKER)


# ----------------------------------------------------------------------------- pixels
_LINEAR_OF_UINT8 = color.srgb_to_linear(np.arange(256) / 255.0, np).astype(np.float32)


def lightness(rgb: np.ndarray) -> np.ndarray:
  """sRGB [H, W, 3], uint8 or float in [0, 1] -> CIE L [H, W] in [0, 100], as color.rgb_to_lab."""
  flat = rgb.reshape(-1, 3)
  l = np.empty(len(flat), np.float32)
  for start in range(0, len(flat), _BLOCK_PIXELS):
    block = flat[start : start + _BLOCK_PIXELS]
    linear = (
      _LINEAR_OF_UINT8[block]
      if block.dtype == np.uint8
      else color.srgb_to_linear(block.astype(np.float32), np)
    )
    l[start : start + len(block)] = color.linear_to_lightness(linear, np)
  return l.reshape(rgb.shape[:2])


def compose(l: np.ndarray, ab: np.ndarray) -> np.ndarray:
  """L [H, W] and ab [H, W, 2] (Lab units) -> uint8 sRGB [H, W, 3] keeping L and hue.

  A color outside the sRGB gamut gets the largest chroma scale s in [0, 1] (ab -> s * ab, found by
  bisection) that fits; ab = 0 (gray) always fits, so every pixel keeps its lightness.
  """
  shape = l.shape
  l = l.reshape(-1).astype(np.float32)
  ab = ab.reshape(-1, 2).astype(np.float32)
  out = np.empty((l.size, 3), np.uint8)
  # In blocks that stay in cache: 3x faster than whole-photo temporaries, and far less memory.
  for start in range(0, l.size, _BLOCK_PIXELS):
    block = slice(start, start + _BLOCK_PIXELS)
    out[block] = color.lab_to_srgb_uint8(l[block], ab[block, 0], ab[block, 1], np)
  return out.reshape(shape + (3,))


def _resize(channel: np.ndarray, width: int, height: int) -> np.ndarray:
  """Bilinear resize of a float32 [H, W] array (antialiased when shrinking, as Pillow does)."""
  image = Image.fromarray(np.ascontiguousarray(channel, np.float32))
  return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)


def content_size(height: int, width: int, size: int, squash: bool) -> tuple[int, int]:
  """(h, w) of the photo inside the generator's size x size input."""
  if squash:
    return size, size
  scale = size / max(height, width)
  return (max(1, min(size, round(height * scale))), max(1, min(size, round(width * scale))))


def model_input(l: np.ndarray, size: int, squash: bool) -> np.ndarray:
  """Full-resolution L [H, W] -> the generator's input [size, size, 1] at model scale.

  The photo's long side becomes `size` and the short side is mirror-padded (the padding's colors are
  thrown away); with `squash`, the photo is resized to size x size.
  """
  h, w = content_size(*l.shape, size, squash)
  small = _resize(l, w, h)
  small = np.pad(small, ((0, size - h), (0, size - w)), mode="symmetric")
  return np.asarray(color.scale_l(small), np.float32)[..., None]


def model_hints(
  hints: user_hints.UserHints, height: int, width: int, size: int, squash: bool
) -> np.ndarray:
  """A photo's hints (its pixels) -> the generator's hint map [size, size, 3], placed exactly as
  model_input places the photo (user_hints.to_grid)."""
  return user_hints.to_grid(hints, (height, width), content_size(height, width, size, squash), size)


def upsample_ab(ab: np.ndarray, height: int, width: int, squash: bool) -> np.ndarray:
  """The generator's ab [size, size, 2] (model scale) -> Lab units [height, width, 2] (bilinear)."""
  h, w = content_size(height, width, ab.shape[0], squash)
  ab = np.asarray(color.unscale_ab(ab[:h, :w]), np.float32)
  return np.stack([_resize(ab[..., i], width, height) for i in range(2)], axis=-1)


# ----------------------------------------------------------------------------- files
def _to_rgb_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
  """Any Pillow mode -> RGB [H, W, 3] (uint8, or float32 in [0, 1] for 16-bit and float photos)
  and uint8 alpha [H, W] (or None)."""
  mode = image.mode
  if mode.startswith("I;16") or mode == "I":  # 16-bit grayscale (PNG, TIFF): keep its precision
    gray = np.asarray(image).astype(np.float32) / 65535.0
    return np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=-1), None
  if mode == "F":  # float TIFF, taken as [0, 1]
    gray = np.clip(np.asarray(image, np.float32), 0, 1)
    return np.repeat(gray[..., None], 3, axis=-1), None
  if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
    rgba = np.asarray(image.convert("RGBA"))
    return rgba[..., :3], np.ascontiguousarray(rgba[..., 3])
  # 1, L, P, RGB, CMYK, YCbCr, ... (Pillow's conversions; ICC profiles are not applied)
  return np.asarray(image.convert("RGB")), None


def load_photo(path: str) -> Photo:
  """Decodes a photo (EXIF orientation applied) into its full-resolution L and alpha.

  An animation or a multi-page file (GIF, APNG, WebP, TIFF) gives its first frame, with a note.

  Raises:
    BadPhoto: not an image Pillow reads, corrupt or truncated, or larger than MAX_PIXELS.
  """
  try:
    with Image.open(path) as image:
      width, height = image.size  # from the header: nothing is decoded yet
      if width * height > MAX_PIXELS:
        raise BadPhoto(
          f"too large: {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel "
          "limit (decompression-bomb guard)"
        )
      frames = getattr(image, "n_frames", 1)
      image = ImageOps.exif_transpose(image)
      rgb, alpha = _to_rgb_and_alpha(image)
  except BadPhoto:
    raise
  except Image.DecompressionBombError as e:
    raise BadPhoto(f"too large: {e}") from e
  except Image.UnidentifiedImageError as e:
    raise BadPhoto("not an image (Pillow cannot identify it)") from e
  except MemoryError as e:
    raise BadPhoto("too large to decode in memory") from e
  except (OSError, ValueError, SyntaxError, EOFError) as e:  # what Pillow raises on damaged files
    raise BadPhoto(f"corrupt or unreadable: {' '.join(str(e).split()) or type(e).__name__}") from e
  if min(rgb.shape[:2]) < 1:
    raise BadPhoto("empty image")
  note = (
    f"{frames} frames (an animation or several pages): only the first one is colorized"
    if frames > 1
    else None
  )
  return Photo(lightness(rgb), alpha, note)


def save(path: str, rgb: np.ndarray, alpha: np.ndarray | None, output_format: str) -> None:
  """Writes uint8 RGB (+ alpha for PNG) atomically: a temporary file renamed over `path`."""
  image = Image.fromarray(rgb)
  if alpha is not None and output_format == "png":
    image = Image.fromarray(np.concatenate([rgb, alpha[..., None]], axis=-1))
  if output_format == "jpg":
    exif = Image.Exif()
    exif[_EXIF_SOFTWARE] = OUTPUT_MARKER
    kwargs = {"quality": JPEG_QUALITY, "exif": exif}
  else:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", OUTPUT_MARKER)
    kwargs = {"pnginfo": info}
  with fileio.atomic_path(path) as tmp:
    image.save(tmp, format=OUTPUT_FORMATS[output_format], **kwargs)
