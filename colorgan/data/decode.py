"""Encoded image bytes -> uint8 RGB crops, with Pillow; and the start-up check of image files.

One decoder for every source and format (JPEG, PNG, WebP, BMP, TIFF) and mode (palette, RGBA,
16-bit, CMYK): JPEG DCT downscaling for large photos, the resize and crop done in the same call.
Files that cannot be used (empty, not an image, truncated, grayscale, too large) are found at start
from their header; what only shows at decode time (a corrupt stream, an RGB file holding a
black-and-white photo) is reported by `decode_image` and logged by a `SkipLog`.

No TensorFlow here: the tf.data pipeline (`colorgan.data.pipeline`) calls these functions.
"""

import collections
import concurrent.futures
import io
import os
import threading
import time

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps

# Rejected from the header, before any pixel is decoded: a 50,000-px panorama strip or a PNG that
# declares 30,000 x 30,000 pixels in a few hundred kB (a decompression bomb) would take seconds and
# gigabytes to decode for one 256-px crop.
MAX_IMAGE_SIDE = 30_000
MAX_IMAGE_PIXELS = 100_000_000
# Modes without color: nothing to learn about chroma. (Palette, RGBA, 16-bit RGB, CMYK and YCbCr are
# converted to 8-bit RGB.)
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_RGB_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr"})
# An RGB image is grayscale when fewer than 1% of its pixels differ by more than 6 levels between their
# channels: a black-and-white photo saved as RGB decodes to R = G = B (JPEG) up to a level or two.
_GRAY_CHROMA = 6
_GRAY_FRACTION = 0.01
LOG_FIRST = 10  # bad images named one by one; after that, counts


def _header_problem(image: Image.Image) -> str | None:
  """Why an opened (not yet decoded) image cannot be used, or None."""
  width, height = image.size
  if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
    return (
      f"too large ({width}x{height} px; the limit is {MAX_IMAGE_SIDE} px a side, "
      f"{MAX_IMAGE_PIXELS // 1_000_000} Mpx)"
    )
  if min(width, height) < 1:
    return "empty image (0 px)"
  if image.mode in _GRAY_MODES:
    return f"grayscale (mode {image.mode}): no color to learn"
  if image.mode not in _RGB_MODES:
    return f"unsupported color mode {image.mode}"
  return None


def _open(fp) -> tuple[Image.Image | None, str | None]:
  """Reads the header only, from a file object. Returns (image, None) or (None, why not usable)."""
  try:
    image = Image.open(fp)
  except Image.DecompressionBombError as e:
    return None, f"too large (decompression bomb: {e})"
  except Image.UnidentifiedImageError:
    return None, "not an image"
  except Exception as e:  # pylint: disable=broad-except  (Pillow raises many kinds on bad headers)
    return None, f"unreadable header ({type(e).__name__}: {e})"
  problem = _header_problem(image)
  return (None, problem) if problem else (image, None)


def _is_grayscale(image: Image.Image) -> bool:
  """An RGB image without color, judged on 64 x 64 evenly spread pixels."""
  sample = np.asarray(image.resize((64, 64), Image.NEAREST))
  r, g, b = sample[..., 0], sample[..., 1], sample[..., 2]
  chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
  return np.count_nonzero(chroma > _GRAY_CHROMA) < _GRAY_FRACTION * chroma.size


def _target_size(
  width: int, height: int, *, image_size: int, load_size: int, resize_mode: str
) -> tuple[int, int]:
  """(width, height) of the whole image before cropping."""
  if resize_mode == "resize":
    return image_size, image_size
  short = max(load_size, image_size)
  scale = short / min(width, height)
  return max(short, round(width * scale)), max(short, round(height * scale))


def _resize_crop(
  image: Image.Image,
  *,
  image_size: int,
  load_size: int,
  resize_mode: str,
  rng: np.random.Generator | None,
  random_flip: bool,
) -> np.ndarray:
  """RGB image -> uint8 [image_size, image_size, 3].

  crop mode: resize the short side to load_size, then crop image_size (random when rng is given, the
  center otherwise). resize mode: the tutorial's plain resize to a square, no crop. Only the crop is
  resampled (Pillow's `box`): the same pixels as resizing the whole image, then cropping.
  """
  size = image_size
  width, height = image.size
  new_w, new_h = _target_size(
    width, height, image_size=size, load_size=load_size, resize_mode=resize_mode
  )
  if rng is None:
    top, left = (new_h - size) // 2, (new_w - size) // 2
  else:
    top, left = int(rng.integers(new_h - size + 1)), int(rng.integers(new_w - size + 1))
  sx, sy = width / new_w, height / new_h
  box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
  crop = image.resize((size, size), Image.BILINEAR, box=box)
  if rng is not None and random_flip and rng.random() < 0.5:
    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(crop)


def decode_image(
  data: bytes,
  *,
  image_size: int,
  load_size: int,
  resize_mode: str,
  random_flip: bool = False,
  rng: np.random.Generator | None = None,
) -> tuple[np.ndarray | None, str | None]:
  """Encoded bytes -> (uint8 [image_size, image_size, 3], None), or (None, why it was skipped).

  Any format Pillow reads; palette, RGBA (alpha dropped), 16-bit RGB and CMYK are converted to 8-bit
  RGB and EXIF orientation is applied; grayscale images (by mode or by content) are skipped. rng: a
  random crop and flip; None: the center crop.
  """
  if not data:
    return None, "empty file"
  image, problem = _open(io.BytesIO(data))
  if problem:
    return None, problem
  try:
    if image.format in ("JPEG", "MPO"):  # decode at 1/2, 1/4 or 1/8 scale if that covers the target
      image.draft(
        None,
        _target_size(
          *image.size, image_size=image_size, load_size=load_size, resize_mode=resize_mode
        ),
      )
    image.load()
    ImageOps.exif_transpose(image, in_place=True)  # photos as they are shown (EXIF orientation)
    if image.mode in ("P", "PA"):
      image = image.convert("RGBA")  # palettes may carry transparency: expand them first
    if image.mode != "RGB":
      image = image.convert("RGB")
    if _is_grayscale(image):
      return None, "grayscale (an RGB file without color): no color to learn"
    return _resize_crop(
      image,
      image_size=image_size,
      load_size=load_size,
      resize_mode=resize_mode,
      rng=rng,
      random_flip=random_flip,
    ), None
  except Exception as e:  # pylint: disable=broad-except  (a corrupt stream raises many kinds)
    return None, f"undecodable ({type(e).__name__}: {e})"


# ----------------------------------------------------------------------------- reporting skips
class SkipLog:
  """Names the first few images skipped at decode time, then counts them (each image once)."""

  def __init__(self, what: str):
    self._what = what
    self._lock = threading.Lock()
    self._seen: set[str] = set()
    self._reasons = collections.Counter()

  def __call__(self, name: str, reason: str) -> None:
    with self._lock:
      if name in self._seen:
        return
      self._seen.add(name)
      self._reasons[_reason_kind(reason)] += 1
      count = len(self._seen)
    if count <= LOG_FIRST:
      logging.warning("Skipped %s image %s: %s", self._what, name, reason)
    elif count == LOG_FIRST + 1 or count % 100 == 0:
      logging.warning(
        "Skipped %d %s images so far (%s); further ones are counted, not named",
        count,
        self._what,
        _format_counts(self._reasons),
      )


def _reason_kind(reason: str) -> str:
  """The kind of a skip reason, e.g. "too large" for "too large (40000x40000 px ...)"."""
  return reason.split(" (")[0].split(":")[0]


def _format_counts(counter: collections.Counter) -> str:
  return ", ".join(f"{n} {reason}" for reason, n in counter.most_common())


def reason_counts(bad: tuple[tuple[str, str], ...]) -> str:
  """(path, reason) pairs -> "2 too large, 1 empty file"."""
  return _format_counts(collections.Counter(_reason_kind(r) for _, r in bad))


def report_checked_files(
  where: str, num_files: int, good: int, bad: tuple[tuple[str, str], ...]
) -> None:
  """Logs the start-up check of `where`'s files: counts, then the first unusable ones by name."""
  if not bad:
    logging.info("Data: %s: %d image files, all usable", where, num_files)
    return
  logging.warning(
    "Data: %s: %d image files, %d usable, %d skipped (%s)",
    where,
    num_files,
    good,
    len(bad),
    reason_counts(bad),
  )
  for path, reason in bad[:LOG_FIRST]:
    logging.warning("  skipped %s: %s", path, reason)
  if len(bad) > LOG_FIRST:
    logging.warning("  ... and %d more (%s)", len(bad) - LOG_FIRST, reason_counts(bad[LOG_FIRST:]))


# ----------------------------------------------------------------------------- checking files
def _ends_cleanly(path: str, image_format: str) -> bool:
  """A JPEG ends with its EOI marker, a PNG with its IEND chunk; a truncated file does not."""
  with open(path, "rb") as f:
    f.seek(max(0, os.path.getsize(path) - 1024))
    tail = f.read()
  return (b"\xff\xd9" in tail) if image_format in ("JPEG", "MPO") else (b"IEND" in tail)


def check_image_file(path: str) -> str | None:
  """Why the file cannot be used, or None. Reads the header and the last bytes (~0.5 ms a file).

  Catches: empty files, non-images, decompression bombs and oversized images, grayscale and
  unsupported modes, and truncated JPEG/PNG files (whose end marker is missing: confirmed by decoding
  at 1/8 scale, so a JPEG carrying data after its image, like a motion photo, passes). The rest (a
  corrupt stream, an RGB file without color) shows when the image is decoded, and is skipped then.
  """
  try:
    if os.path.getsize(path) == 0:
      return "empty file"
    with open(path, "rb") as f:
      image, problem = _open(f)
      if problem:
        return problem
      if image.format in ("JPEG", "MPO", "PNG") and not _ends_cleanly(path, image.format):
        try:
          image.draft(None, (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
          image.load()
        except Exception as e:  # pylint: disable=broad-except
          return f"truncated or corrupt ({type(e).__name__}: {e})"
    return None
  except OSError as e:
    return f"unreadable ({e.strerror or e})"


def check_image_files(
  paths: tuple[str, ...], *, what: str
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
  """Splits paths into (usable, ((path, reason), ...) unusable); logs progress for many files."""
  reasons = [None] * len(paths)
  last_log = time.time()
  with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
    for i, reason in enumerate(pool.map(check_image_file, paths)):
      reasons[i] = reason
      if time.time() - last_log > 10:
        logging.info("Checked %d/%d %s files", i + 1, len(paths), what)
        last_log = time.time()
  good = tuple(p for p, r in zip(paths, reasons) if r is None)
  bad = tuple((p, r) for p, r in zip(paths, reasons) if r is not None)
  return good, bad
