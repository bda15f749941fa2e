"""Colorize photos at full resolution with a trained generator (`--mode=colorize`).

For each photo:
  1. Decode it in any mode (grayscale, RGB - its color is discarded -, RGBA/LA/transparent palette - the
     alpha is kept -, palette, 16-bit, CMYK), EXIF orientation applied, and compute its own full-
     resolution lightness L (CIE Lab, as colorgan.color; 16-bit photos keep their precision).
  2. The generator works at `size` (the run's image_size or --colorize_size) on the WHOLE photo: L is
     resized so that its long side is `size` (aspect kept) and mirror-padded to size x size, so photos
     of any shape batch together and nothing is distorted or cropped. A run trained with
     data.resize_mode="resize" (photos squashed to a square) gets the squashed photo instead, as it saw
     in training.
  3. The predicted ab of the photo's area is upsampled (bilinear) to the original size and joined with
     the original L. Where that Lab color lies outside the sRGB gamut, its chroma (not its L, not its
     hue) is reduced until it fits; clipping RGB instead would change the lightness. So the output's L
     equals the input's up to uint8 rounding.
Outputs keep each photo's path relative to its --input (a file: its name; a folder: the path below it;
a glob: the path below its fixed leading folders) with the format's extension, written atomically; no
output may land on an input. Photos are decoded and written by a thread pool and run through the
generator in batches. A bad file (corrupt, not an image, larger than MAX_PIXELS) is reported in one
line and the others go on; `Colorizer.run` returns the failure count.
"""

import concurrent.futures
import glob
import os
import sys
from typing import NamedTuple, Sequence
import warnings

from absl import logging
import jax
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import PngImagePlugin
import tqdm

from colorgan import checkpointing
from colorgan import color
from colorgan import configuration
from colorgan import fileio
from colorgan import hints as hints_lib
from colorgan import models
from colorgan import parallel

OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG"}
JPEG_QUALITY = 95
# Every output says it is colorgan's (PNG: a Software text chunk, JPEG: the EXIF Software tag), so
# that a rerun into an input folder recognizes its earlier outputs and does not colorize them again.
OUTPUT_MARKER = "colorgan"
_EXIF_SOFTWARE = 0x0131
# Pillow's own decompression-bomb threshold (~89.5 megapixels); larger photos are rejected before
# decoding. Colorizing needs about 40 bytes a pixel at the peak, so this caps one photo near 3.6 GB.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS

_GAMUT_TOLERANCE = 1e-5  # linear RGB; gray (ab = 0) lands within float error of [0, 1]
_GAMUT_BISECTIONS = 10  # chroma found to 1/1024 of the predicted one
# Per-pixel work runs over blocks of this many pixels: their temporaries stay in cache, 3x faster
# than whole-photo arrays, and memory stays near the photo's own size.
_BLOCK_PIXELS = 1 << 14


class PlanError(ValueError):
  """An --input or --output_dir the command cannot use; the message names it and the fix."""


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
    dirs[:] = sorted(d for d in dirs if not _is_hidden(d)
                     and os.path.realpath(os.path.join(root, d)) != skip)
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
      elif (os.path.isfile(match) and not _is_hidden(os.path.basename(match))
            and not below_output(match)):
        found.append((match, os.path.relpath(match, base)))
    if not found:
      raise PlanError(f"--input={spec}: the pattern matches no file")
    return found
  raise PlanError(f"--input={spec}: no such file or folder")


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
    PlanError: an input that does not exist or matches nothing, no file at all, or an output that
      would overwrite an input.
  """
  if output_format not in OUTPUT_FORMATS:
    raise PlanError(f"--output_format={output_format} is not known: use png or jpg")
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise PlanError(f"--output_dir={output_dir} exists and is not a folder")
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
    raise PlanError(f"--input={','.join(inputs)}: no file found{found}")
  names = _output_names([rel for _, rel in sources], output_format)
  jobs = [Job(path, os.path.join(output_dir, name)) for (path, _), name in zip(sources, names)]
  for job in jobs:
    if os.path.realpath(job.output) in seen:
      raise PlanError(f"--output_dir={output_dir} would overwrite the input {job.output}: choose "
                      "an output folder that is not an input's folder")
  return Plan(jobs, output_dir, output_format, earlier_outputs)


def is_colorgan_output(path: str) -> bool:
  """Whether `path` is an image colorgan wrote (OUTPUT_MARKER in its metadata; headers only)."""
  try:
    with Image.open(path) as image:
      software = image.info.get("Software") or image.getexif().get(_EXIF_SOFTWARE) or ""
  except Exception:  # pylint: disable=broad-except  (not an image: load_photo names it later)
    return False
  return isinstance(software, str) and software.startswith(OUTPUT_MARKER)


# ----------------------------------------------------------------------------- pixels
def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
  return np.where(c > 0.04045, ((np.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4, c / 12.92)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
  return np.where(c > 0.0031308, 1.055 * np.maximum(c, 0.0031308) ** (1 / 2.4) - 0.055, c * 12.92)


_LINEAR_OF_UINT8 = _srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)


def lightness(rgb: np.ndarray) -> np.ndarray:
  """sRGB [H, W, 3], uint8 or float in [0, 1] -> CIE L [H, W] in [0, 100], as color.rgb_to_lab."""
  flat = rgb.reshape(-1, 3)
  l = np.empty(len(flat), np.float32)
  for start in range(0, len(flat), _BLOCK_PIXELS):
    block = flat[start:start + _BLOCK_PIXELS]
    linear = (_LINEAR_OF_UINT8[block] if block.dtype == np.uint8
              else _srgb_to_linear(block.astype(np.float32)))
    y = linear @ color.XYZ_FROM_RGB[1]  # Y / Y_white (Y_white = 1)
    f = np.where(y > color.LAB_EPSILON, np.cbrt(np.maximum(y, color.LAB_EPSILON)),
                 color.LAB_KAPPA * y + 16.0 / 116.0)
    l[start:start + len(block)] = 116.0 * f - 16.0
  return l.reshape(rgb.shape[:2])


def _lab_to_linear_rgb(l: np.ndarray, ab: np.ndarray) -> np.ndarray:
  """[...] L and [..., 2] ab -> linear RGB [..., 3], unclipped (out of gamut stays visible)."""
  fy = (l + 16.0) / 116.0
  f = np.stack([fy + ab[..., 0] / 500.0, fy, fy - ab[..., 1] / 200.0], axis=-1)
  xyz = np.where(f > color.LAB_F_THRESHOLD, f * f * f,  # f*f*f: 6x faster than f**3
                 (f - 16.0 / 116.0) / color.LAB_KAPPA) * color.D65_WHITE
  return xyz @ color.RGB_FROM_XYZ.T


def _in_gamut(linear_rgb: np.ndarray) -> np.ndarray:
  return np.all((linear_rgb >= -_GAMUT_TOLERANCE) & (linear_rgb <= 1 + _GAMUT_TOLERANCE), axis=-1)


def _compose_pixels(l: np.ndarray, ab: np.ndarray) -> np.ndarray:
  """L [N] and ab [N, 2] -> uint8 sRGB [N, 3] (see compose)."""
  linear = _lab_to_linear_rgb(l, ab)
  outside = ~_in_gamut(linear)
  if outside.any():
    l_out, ab_out = l[outside], ab[outside]
    lo = np.zeros(l_out.shape, np.float32)  # in gamut
    hi = np.ones(l_out.shape, np.float32)   # out of gamut
    for _ in range(_GAMUT_BISECTIONS):
      mid = 0.5 * (lo + hi)
      fits = _in_gamut(_lab_to_linear_rgb(l_out, ab_out * mid[:, None]))
      lo, hi = np.where(fits, mid, lo), np.where(fits, hi, mid)
    linear[outside] = _lab_to_linear_rgb(l_out, ab_out * lo[:, None])
  srgb = _linear_to_srgb(np.clip(linear, 0.0, 1.0))
  return np.round(srgb * 255.0).astype(np.uint8)


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
    out[block] = _compose_pixels(l[block], ab[block])
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


def model_hints(user_hints: hints_lib.UserHints, height: int, width: int, size: int,
                squash: bool) -> np.ndarray:
  """A photo's hints (its pixels) -> the generator's hint map [size, size, 3], placed exactly as
  model_input places the photo (hints.to_grid)."""
  return hints_lib.to_grid(user_hints, (height, width), content_size(height, width, size, squash),
                           size)


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
        raise BadPhoto(f"too large: {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel "
                       "limit (decompression-bomb guard)")
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
  note = (f"{frames} frames (an animation or several pages): only the first one is colorized"
          if frames > 1 else None)
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


# ----------------------------------------------------------------------------- the command
class Colorizer:
  """A restored generator that colorizes batches of photos at full resolution."""

  def __init__(self, config: ml_collections.ConfigDict, g_variables: dict, *, step: int,
               size: int | None = None, batch_size: int = 16, mesh: jax.sharding.Mesh | None = None,
               workers: int | None = None):
    """Args:
      config: the config the generator was trained with (model.*, image_size, data.resize_mode).
      g_variables: {"params": ..., "batch_stats": ...}, replicated over `mesh`.
      step: the checkpoint step (for messages).
      size: the generator's input size (default config.image_size): a multiple of 2**U-Net depth.
      batch_size: photos per generator call (rounded up to a multiple of the device count).
      mesh: where the generator runs (default parallel.create_mesh()).
      workers: decode/encode threads (default: the CPU count, at most 8).
    """
    self.size = size or config.image_size
    multiple = 2 ** configuration.generator_depth(config)
    if self.size < multiple or self.size % multiple:
      raise ValueError(f"--colorize_size={self.size} must be a multiple of {multiple} (2**U-Net "
                       f"depth of this run): use {max(multiple, self.size // multiple * multiple)}")
    self.mesh = mesh or parallel.create_mesh()
    devices = self.mesh.devices.size
    self.batch_size = -(-batch_size // devices) * devices
    self.step = step
    self.squash = config.data.resize_mode == "resize"
    self.workers = workers or min(8, os.cpu_count() or 1)
    self.g_variables = g_variables
    self.takes_hints = hints_lib.enabled(config)  # the generator was trained with color hints
    generator = models.create_generator(config)
    if self.takes_hints:  # every photo gets a hint map, empty where it has no hint: one program
      self._predict = jax.jit(
          lambda variables, l, hints: generator.apply(variables, l, hints, train=False),
          in_shardings=(parallel.replicated(self.mesh), parallel.batch_sharding(self.mesh),
                        parallel.batch_sharding(self.mesh)))
    else:
      self._predict = jax.jit(
          lambda variables, l: generator.apply(variables, l, train=False),
          in_shardings=(parallel.replicated(self.mesh), parallel.batch_sharding(self.mesh)))

  @classmethod
  def from_checkpoint(cls, workdir: str, step: int | None = None, **kwargs) -> "Colorizer":
    """The generator of a run's latest (or `step`) checkpoint. Raises FileNotFoundError as
    checkpointing.restore_for_inference does."""
    mesh = parallel.create_mesh()
    inference = checkpointing.restore_for_inference(workdir, step,
                                                    sharding=parallel.replicated(mesh))
    return cls(inference.config, inference.g_variables, step=inference.step, mesh=mesh, **kwargs)

  def predict_ab(self, inputs: np.ndarray, hints: np.ndarray | None = None) -> np.ndarray:
    """Model-scale L [n, S, S, 1] (and hint maps [n, S, S, 3], for a generator trained with hints;
    None: no hint) -> model-scale ab [n, S, S, 2], in fixed-size batches."""
    n = len(inputs)
    batch = {"l": np.zeros((self.batch_size,) + inputs.shape[1:], np.float32)}
    batch["l"][:n] = inputs
    if self.takes_hints:
      batch["hints"] = np.zeros(batch["l"].shape[:-1] + (hints_lib.CHANNELS,), np.float32)
      if hints is not None:
        batch["hints"][:n] = hints
    elif hints is not None:
      raise ValueError("this generator was trained without hints (config.hints.enabled=False)")
    with jax.set_mesh(self.mesh):
      batch = parallel.global_batch(self.mesh, batch)
      args = (batch["l"], batch["hints"]) if self.takes_hints else (batch["l"],)
      ab = self._predict(self.g_variables, *args)
    return np.asarray(jax.device_get(ab))[:n]

  def colorize_photo(self, photo: Photo, hints: hints_lib.UserHints | None = None) -> np.ndarray:
    """One decoded photo (and its hints, for a generator trained with them) -> its colorization,
    uint8 RGB [H, W, 3] (the alpha is the caller's)."""
    hint_map = (None if hints is None else
                model_hints(hints, *photo.l.shape, self.size, self.squash)[None])
    ab = self.predict_ab(model_input(photo.l, self.size, self.squash)[None], hint_map)[0]
    return compose(photo.l, upsample_ab(ab, *photo.l.shape, self.squash))

  def _prepare(self, job: Job,
               hint_file: str | None) -> tuple[Photo, np.ndarray, np.ndarray | None]:
    photo = load_photo(job.source)
    hint_map = None
    if hint_file:
      try:
        user_hints = hints_lib.read_user_hints(hint_file, *photo.l.shape)
      except hints_lib.HintError as e:  # the photo is not colorized without its hints
        raise BadPhoto(str(e).removeprefix("--hints=")) from e
      hint_map = model_hints(user_hints, *photo.l.shape, self.size, self.squash)
    return photo, model_input(photo.l, self.size, self.squash), hint_map

  def _finish(self, job: Job, photo: Photo, ab: np.ndarray, output_format: str) -> None:
    height, width = photo.l.shape
    rgb = compose(photo.l, upsample_ab(ab, height, width, self.squash))
    save(job.output, rgb, photo.alpha, output_format)

  def run(self, work: Plan, hint_files: dict[str, str] | None = None) -> int:
    """Colorizes every job of `work` (from `plan`); a failing file is reported in one line and skipped.

    Args:
      work: the plan.
      hint_files: {job.source: its hint file} (hints.match_hint_files) for a generator trained with
        hints; a photo whose hints cannot be read fails (it is not colorized without them).

    Returns:
      The number of photos that failed.
    """
    hint_files = hint_files or {}
    if hint_files and not self.takes_hints:
      raise ValueError("this generator was trained without hints (config.hints.enabled=False)")
    jobs, output_format = work.jobs, work.output_format
    # Photos over MAX_PIXELS are rejected by load_photo; Pillow's warning about them is noise.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    failed, alpha_dropped = [], 0

    def report(job: Job, error: BaseException) -> None:
      reason = str(error) if isinstance(error, BadPhoto) else (
          f"{type(error).__name__}: {' '.join(str(error).split())}")
      tqdm.tqdm.write(f"colorgan: {job.source}: {reason}", file=sys.stderr)
      failed.append(job)

    logging.info("Colorizing %d photo(s) with the generator of step %d at %d px, batches of %d",
                 len(jobs), self.step, self.size, self.batch_size)
    if work.earlier_outputs:
      logging.info("Skipped %d file(s) among the inputs that colorgan wrote (earlier outputs)",
                   work.earlier_outputs)
    with concurrent.futures.ThreadPoolExecutor(self.workers) as pool, tqdm.tqdm(
        total=len(jobs), unit="photo", desc="colorize", file=sys.stderr) as bar:
      for start in range(0, len(jobs), self.batch_size):
        chunk = jobs[start:start + self.batch_size]
        prepared = []
        for job, future in [(job, pool.submit(self._prepare, job, hint_files.get(job.source)))
                            for job in chunk]:
          try:
            prepared.append((job, *future.result()))
          except Exception as e:  # pylint: disable=broad-except  (one bad file never stops the rest)
            report(job, e)
            continue
          if prepared[-1][1].note:
            tqdm.tqdm.write(f"colorgan: {job.source}: {prepared[-1][1].note}", file=sys.stderr)
        if prepared:
          hint_maps = None
          if self.takes_hints:
            empty = np.zeros((self.size, self.size, hints_lib.CHANNELS), np.float32)
            hint_maps = np.stack([empty if h is None else h for *_, h in prepared])
          abs_ = self.predict_ab(np.stack([inputs for _, _, inputs, _ in prepared]), hint_maps)
          finishing = [(job, pool.submit(self._finish, job, photo, ab, output_format))
                       for (job, photo, _, _), ab in zip(prepared, abs_)]
          for job, future in finishing:
            try:
              future.result()
            except Exception as e:  # pylint: disable=broad-except
              report(job, e)
          alpha_dropped += sum(photo.alpha is not None for _, photo, _, _ in prepared)
        bar.update(len(chunk))
    if alpha_dropped and output_format == "jpg":
      logging.warning("%d photo(s) had an alpha channel, which jpg cannot hold: use "
                      "--output_format=png to keep it", alpha_dropped)
    done = len(jobs) - len(failed)
    with_hints = (f", {len(set(hint_files) - {job.source for job in failed})} with hints"
                  if hint_files else "")
    print(f"colorized {done} of {len(jobs)} photo(s) into {work.output_dir} (checkpoint step "
          f"{self.step}, {self.size} px{with_hints})")
    if failed:
      print(f"colorgan: {len(failed)} of {len(jobs)} photo(s) failed (named above)", file=sys.stderr)
    return len(failed)
