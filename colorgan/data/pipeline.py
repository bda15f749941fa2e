"""Photos -> batches of uint8 RGB crops for this host. Lab conversion happens on device, in the step.

Three sources, picked by `config.data.source`:
  bundled  the color photos shipped inside scikit-image and scikit-learn (the quickstart);
  folder   a directory of images, read recursively (`config.data.path`);
  tfds     any TFDS image dataset (`config.data.tfds_name`, split syntax in `train_split`/`eval_split`).

Every image, whatever its source, is decoded by Pillow inside the tf.data graph (a numpy_function over
the encoded bytes): one decoder for every format (JPEG, PNG, WebP, BMP, TIFF) and mode (palette, RGBA,
16-bit, CMYK), JPEG DCT downscaling for large photos, and the resize and crop done in the same call.

The training stream is a pure function of (seed, position): the crop and flip of the k-th example of
the global stream are seeded by (seed, k). A resumed run (`start_step`) continues with the very batches
an uninterrupted run would have seen:
  * files (bundled, folder): epoch e visits the images in a permutation seeded by (seed, e); each host
    decodes only its rows [lo, hi) of every global batch, so the global batch is the same for any
    number of hosts, and resuming skips indices (nothing is read).
  * tfds: each host reads its own shard of the split (`tfds.even_splits`, one per process). Epoch e
    reads the host's shard as 16 chunks in an order permuted by (seed, e), shuffled in windows of
    `config.data.shuffle_window` examples seeded by (seed, e, window). Resuming skips whole epochs for
    free and reads (without decoding) at most one chunk. The stream depends on the number of processes.

Bad data never stops training. Files that cannot be used (empty, not an image, truncated, grayscale,
too large) are found at start by a header check and reported; what only shows at decode time (a corrupt
stream, an RGB file holding a black-and-white photo, a bad TFDS example) is logged and its slot in the
stream is filled by the next usable example of this host, so positions, resumption and batch shapes
are unaffected.
"""

import atexit
import collections
import concurrent.futures
import dataclasses
import gc
import hashlib
import io
import os
import sys
import threading
import time

from absl import logging
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageOps
import tensorflow as tf

from colorgan import configuration

# The natural color photos shipped inside scikit-image and scikit-learn (no download).
_SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                   "motorcycle_left.png", "motorcycle_right.png")
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
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
# More consecutive unusable examples than this means the data, not an example, is broken.
_MAX_CONSECUTIVE_FAILURES = 1000
# TFDS: a host's shard is read as this many chunks, whose order is permuted every epoch.
_TFDS_CHUNKS = 16
# Salts that keep the streams of random numbers apart.
_AUGMENT_SALT, _EPOCH_SALT, _WINDOW_SALT = 0, 1, 2
_LOG_FIRST = 10  # bad images named one by one; after that, counts


class DataError(configuration.ConfigError):
  """The data named by config.data.* cannot be used; the message is one line naming it and the fix."""


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
  """A split of a TFDS dataset, read as encoded images (decoded by this module)."""
  name: str  # e.g. "coco/2017"
  split: str  # TFDS split syntax, e.g. "train[:8000]"
  data_dir: str | None
  image_key: str
  num_examples: int


# The training or evaluation images of a source: image files, or a TFDS split.
Images = tuple[str, ...] | TfdsSplit


@dataclasses.dataclass(frozen=True)
class Source:
  """The images of one data source, split for training and evaluation."""
  name: str
  train: Images
  eval: Images
  skipped: tuple[tuple[str, str], ...] = ()  # (path, reason) of the files found unusable at start


@atexit.register
def _close_pipelines_of_a_crash() -> None:
  """Lets a process that dies of an uncaught exception exit instead of hanging.

  Python keeps that exception's traceback (sys.last_*) and with it the frames holding tf.data
  iterators. An iterator still alive when the interpreter shuts down hangs it: its decoding threads
  wait to run Python (the numpy_function) that is gone. Freed here, while Python still runs, the
  pipelines close cleanly. (For the same reason, keep iterators in functions, not module globals.)
  """
  for name in ("last_exc", "last_type", "last_value", "last_traceback"):
    if hasattr(sys, name):
      setattr(sys, name, None)
  gc.collect()


def num_images(images: Images) -> int:
  return images.num_examples if isinstance(images, TfdsSplit) else len(images)


# ----------------------------------------------------------------------------- decoding (Pillow)
def _header_problem(image: Image.Image) -> str | None:
  """Why an opened (not yet decoded) image cannot be used, or None."""
  width, height = image.size
  if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
    return (f"too large ({width}x{height} px; the limit is {MAX_IMAGE_SIDE} px a side, "
            f"{MAX_IMAGE_PIXELS // 1_000_000} Mpx)")
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


def _target_size(width: int, height: int, *, image_size: int, load_size: int,
                 resize_mode: str) -> tuple[int, int]:
  """(width, height) of the whole image before cropping."""
  if resize_mode == "resize":
    return image_size, image_size
  short = max(load_size, image_size)
  scale = short / min(width, height)
  return max(short, round(width * scale)), max(short, round(height * scale))


def _resize_crop(image: Image.Image, *, image_size: int, load_size: int, resize_mode: str,
                 rng: np.random.Generator | None, random_flip: bool) -> np.ndarray:
  """RGB image -> uint8 [image_size, image_size, 3].

  crop mode: resize the short side to load_size, then crop image_size (random when rng is given, the
  center otherwise). resize mode: the tutorial's plain resize to a square, no crop. Only the crop is
  resampled (Pillow's `box`): the same pixels as resizing the whole image, then cropping.
  """
  size = image_size
  width, height = image.size
  new_w, new_h = _target_size(width, height, image_size=size, load_size=load_size,
                              resize_mode=resize_mode)
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


def decode_image(data: bytes, *, image_size: int, load_size: int, resize_mode: str,
                 random_flip: bool = False,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray | None, str | None]:
  """Encoded bytes -> (uint8 [image_size, image_size, 3], None), or (None, why it was skipped).

  Any format Pillow reads; palette, RGBA (alpha dropped), 16-bit RGB and CMYK are converted to 8-bit
  RGB and EXIF orientation is applied; grayscale images (by mode or by content) are skipped. rng: a random crop and flip; None: the
  center crop.
  """
  if not data:
    return None, "empty file"
  image, problem = _open(io.BytesIO(data))
  if problem:
    return None, problem
  try:
    if image.format in ("JPEG", "MPO"):  # decode at 1/2, 1/4 or 1/8 scale if that covers the target
      image.draft(None, _target_size(*image.size, image_size=image_size, load_size=load_size,
                                     resize_mode=resize_mode))
    image.load()
    ImageOps.exif_transpose(image, in_place=True)  # photos as they are shown (EXIF orientation)
    if image.mode in ("P", "PA"):
      image = image.convert("RGBA")  # palettes may carry transparency: expand them first
    if image.mode != "RGB":
      image = image.convert("RGB")
    if _is_grayscale(image):
      return None, "grayscale (an RGB file without color): no color to learn"
    return _resize_crop(image, image_size=image_size, load_size=load_size,
                        resize_mode=resize_mode, rng=rng, random_flip=random_flip), None
  except Exception as e:  # pylint: disable=broad-except  (a corrupt stream raises many kinds)
    return None, f"undecodable ({type(e).__name__}: {e})"


class _SkipLog:
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
    if count <= _LOG_FIRST:
      logging.warning("Skipped %s image %s: %s", self._what, name, reason)
    elif count == _LOG_FIRST + 1 or count % 100 == 0:
      logging.warning("Skipped %d %s images so far (%s); further ones are counted, not named",
                      count, self._what, _format_counts(self._reasons))


def _reason_kind(reason: str) -> str:
  """The kind of a skip reason, e.g. "too large" for "too large (40000x40000 px ...)"."""
  return reason.split(" (")[0].split(":")[0]


def _format_counts(counter: collections.Counter) -> str:
  return ", ".join(f"{n} {reason}" for reason, n in counter.most_common())


def _rng(seed: int, position: int) -> np.random.Generator:
  return np.random.default_rng([seed % 2**64, _AUGMENT_SALT, position])


class _Decoder:
  """The decode step of a tf.data pipeline: a numpy_function around `decode_image`.

  Returns (image uint8 [S, S, 3], ok bool). A skipped image is logged and comes back as zeros with
  ok=False; the pipeline decides what fills its place.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, train: bool, what: str,
               paths: tuple[str, ...] = ()):
    self._kwargs = dict(image_size=config.image_size, load_size=config.data.load_size,
                        resize_mode=config.data.resize_mode,
                        random_flip=train and config.data.random_flip)
    self._seed = config.seed
    self._train = train
    self._paths = paths
    self._cache = {} if config.data.cache else None
    self._log = _SkipLog(what)
    self._size = config.image_size

  def decode(self, data: bytes, name: str, position: int):
    """Python side: (image, ok), logging a skipped image."""
    rng = _rng(self._seed, position) if self._train else None
    image, problem = decode_image(data, rng=rng, **self._kwargs)
    if problem:
      self._log(name, problem)
      return np.zeros((self._size, self._size, 3), np.uint8), False
    return image, True

  def read(self, path: str) -> bytes:
    if self._cache is not None and path in self._cache:
      return self._cache[path]
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError:
      data = b""  # a file removed or unreadable since the start-up check: skipped as empty
    if self._cache is not None:
      self._cache[path] = data
    return data

  def _decode_index(self, index, position):
    if index < 0:  # padding of the last eval batch
      return np.zeros((self._size, self._size, 3), np.uint8), False
    path = self._paths[index]
    return self.decode(self.read(path), path, int(position))

  def _decode_bytes(self, data, name, position):
    return self.decode(data, name.decode("utf-8", "replace"), int(position))

  def _finish(self, image, ok):
    image.set_shape([self._size, self._size, 3])
    ok.set_shape([])
    return image, ok

  def file(self, index, position):
    """index into `paths` (-1: padding), global stream position."""
    return self._finish(*tf.numpy_function(self._decode_index, [index, position],
                                           [tf.uint8, tf.bool]))

  def bytes(self, data, name, position):
    """Encoded image bytes, a name for the log, global stream position."""
    return self._finish(*tf.numpy_function(self._decode_bytes, [data, name, position],
                                           [tf.uint8, tf.bool]))


# ----------------------------------------------------------------------------- sources: files
def bundled_photo_paths() -> tuple[str, ...]:
  import skimage.data  # pylint: disable=g-import-not-at-top
  import sklearn.datasets  # pylint: disable=g-import-not-at-top
  skimage_dir = os.path.dirname(skimage.data.__file__)
  sklearn_dir = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
  paths = tuple(os.path.join(skimage_dir, f) for f in _SKIMAGE_PHOTOS)
  paths += tuple(os.path.join(sklearn_dir, f) for f in _SKLEARN_PHOTOS)
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"bundled photo {missing[0]} is missing: reinstall scikit-image and "
                            "scikit-learn (pip install -e .)")
  return paths


def list_image_files(root: str) -> tuple[str, ...]:
  """Image files under root, recursively, as sorted relative paths ('/'-separated).

  Extensions in IMAGE_EXTENSIONS, any case. Hidden files and folders (".*") are left out.
  """
  found = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    for filename in filenames:
      if not filename.startswith(".") and filename.lower().endswith(IMAGE_EXTENSIONS):
        found.append(os.path.relpath(os.path.join(dirpath, filename), root).replace(os.sep, "/"))
  return tuple(sorted(found))


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


def check_image_files(paths: tuple[str, ...], *, what: str) -> tuple[tuple[str, ...],
                                                                     tuple[tuple[str, str], ...]]:
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


def _reason_counts(bad) -> str:
  return _format_counts(collections.Counter(_reason_kind(r) for _, r in bad))


def _report(where: str, num_files: int, good: int, bad: tuple[tuple[str, str], ...]) -> None:
  if not bad:
    logging.info("Data: %s: %d image files, all usable", where, num_files)
    return
  logging.warning("Data: %s: %d image files, %d usable, %d skipped (%s)", where, num_files, good,
                  len(bad), _reason_counts(bad))
  for path, reason in bad[:_LOG_FIRST]:
    logging.warning("  skipped %s: %s", path, reason)
  if len(bad) > _LOG_FIRST:
    logging.warning("  ... and %d more (%s)", len(bad) - _LOG_FIRST,
                    _reason_counts(bad[_LOG_FIRST:]))


def _in_eval_split(rel_path: str, *, seed: int, fraction: float) -> bool:
  """A seeded hash of the relative path: stable when files are added, removed or reordered."""
  digest = hashlib.sha256(f"{seed}:{rel_path}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _folder_source(config: ml_collections.ConfigDict) -> Source:
  root = os.path.abspath(os.path.expanduser(config.data.path))
  key = f"config.data.path={config.data.path}"
  if not config.data.path:
    raise DataError("config.data.source='folder' needs config.data.path: "
                    "add --config.data.path=/path/to/photos")
  if not os.path.isdir(root):
    raise DataError(f"{key} is not a directory: point it at a folder of images")
  train_dir, eval_dir = os.path.join(root, "train"), None
  for name in ("val", "validation"):
    if os.path.isdir(train_dir) and os.path.isdir(os.path.join(root, name)):
      eval_dir = os.path.join(root, name)
      break
  if eval_dir:  # the folder's own split
    train_files = tuple(os.path.join(train_dir, p) for p in list_image_files(train_dir))
    eval_files = tuple(os.path.join(eval_dir, p) for p in list_image_files(eval_dir))
    split_note = f"train/ and {os.path.basename(eval_dir)}/ subfolders"
  else:
    rel = list_image_files(root)
    in_eval = [_in_eval_split(p, seed=config.data.split_seed, fraction=config.data.eval_fraction)
               for p in rel]
    train_files = tuple(os.path.join(root, p) for p, e in zip(rel, in_eval) if not e)
    eval_files = tuple(os.path.join(root, p) for p, e in zip(rel, in_eval) if e)
    split_note = f"eval_fraction={config.data.eval_fraction} by hash"
  num_files = len(train_files) + len(eval_files)
  if not num_files:
    raise DataError(f"{key} holds no image files ({' '.join(IMAGE_EXTENSIONS)}, any case, searched "
                    "recursively): point it at a folder of photos")
  train, train_bad = check_image_files(train_files, what="train")
  evals, eval_bad = check_image_files(eval_files, what="eval")
  bad = train_bad + eval_bad
  _report(root, num_files, len(train) + len(evals), bad)
  if not train and not evals:
    raise DataError(f"{key}: none of its {num_files} image files is usable "
                    f"({_reason_counts(bad)}); colorgan needs color photos")
  if not train or not evals:
    # Too few files to hold some out (or an empty train/ or val/): train and evaluate on the same
    # photos, as the bundled source does.
    logging.warning("Data: %s: %s leaves %d train and %d eval images: using all %d for both",
                    root, split_note, len(train), len(evals), len(train) + len(evals))
    train = evals = tuple(sorted(train + evals))
  logging.info("Data: %s: %d train, %d eval images (%s)", root, len(train), len(evals), split_note)
  return Source("folder", train, evals, bad)


# ----------------------------------------------------------------------------- sources: tfds
def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (seconds to import)
  return tfds


def _tfds_records(images: TfdsSplit, split) -> tf.data.Dataset:
  """{image_key: encoded image bytes, "tfds_id": its id} of `split`, in the dataset's own order."""
  tfds = _tfds()
  builder = tfds.builder(images.name, data_dir=images.data_dir)
  key = images.image_key
  return builder.as_dataset(
      split=split, shuffle_files=False,
      decoders=tfds.decode.PartialDecoding({key: True}, decoders={key: tfds.decode.SkipDecoding()}),
      read_config=tfds.ReadConfig(add_tfds_id=True, skip_prefetch=True, try_autocache=False))


def _cardinality(ds: tf.data.Dataset) -> int:
  n = int(ds.cardinality())
  if n < 0:  # unknown: count (bytes only, nothing is decoded)
    n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
  return n


def _tfds_source(config: ml_collections.ConfigDict) -> Source:
  cfg = config.data
  if not cfg.tfds_name:
    raise DataError("config.data.source='tfds' needs config.data.tfds_name: e.g. "
                    "--config.data.tfds_name=coco/2017")
  tfds = _tfds()
  data_dir = os.path.expanduser(cfg.tfds_data_dir) if cfg.tfds_data_dir else None
  try:
    builder = tfds.builder(cfg.tfds_name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except  (DatasetNotFoundError and friends)
    raise DataError(f"config.data.tfds_name={cfg.tfds_name!r} is not a TFDS dataset "
                    f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
  features = builder.info.features
  if cfg.image_key not in features or not isinstance(features[cfg.image_key], tfds.features.Image):
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    raise DataError(f"config.data.image_key={cfg.image_key!r} is not an image feature of "
                    f"{cfg.tfds_name}: its image features are {images or 'none'}")
  if features[cfg.image_key].shape[-1] == 1:
    raise DataError(f"{cfg.tfds_name}'s {cfg.image_key!r} images are grayscale: colorgan needs "
                    "color photos")
  if cfg.tfds_download:
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except  (network, disk, manual downloads)
      raise DataError(f"config.data.tfds_name={cfg.tfds_name!r} could not be downloaded and "
                      f"prepared: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
  splits = {}
  for key, split in (("train_split", cfg.train_split), ("eval_split", cfg.eval_split)):
    images = TfdsSplit(cfg.tfds_name, split, data_dir, cfg.image_key, 0)
    try:
      count = _cardinality(_tfds_records(images, split))
    except AssertionError as e:  # TFDS's "could not find data in ..."
      if "could not find data" not in str(e):
        raise
      where = data_dir or "the TFDS data dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
      raise DataError(f"config.data.tfds_name={cfg.tfds_name!r} is not prepared in {where}: run "
                      f"`tfds build {cfg.tfds_name}` (with --data_dir, and --manual_dir where the "
                      "dataset needs a manual download) or set --config.data.tfds_download=True"
                      ) from None
    except (ValueError, KeyError, tf.errors.OpError) as e:
      raise DataError(f"config.data.{key}={split!r} is not a split of {cfg.tfds_name} "
                      f"({' '.join(str(e).split())[:200]})") from None
    if not count:
      raise DataError(f"config.data.{key}={split!r} of {cfg.tfds_name} holds no examples")
    splits[key] = dataclasses.replace(images, num_examples=count)
  logging.info("Data: TFDS %s: train %r (%d examples), eval %r (%d examples)", cfg.tfds_name,
               cfg.train_split, splits["train_split"].num_examples, cfg.eval_split,
               splits["eval_split"].num_examples)
  return Source("tfds", splits["train_split"], splits["eval_split"])


def create_source(config: ml_collections.ConfigDict) -> Source:
  """The images named by `config.data.*`, checked. Raises DataError (one line) when none is usable."""
  source = config.data.source
  if source == "bundled":
    paths, bad = check_image_files(bundled_photo_paths(), what="bundled")
    _report("bundled photos", len(paths) + len(bad), len(paths), bad)
    # Eight photos leave nothing to hold out: evaluation and samples use the same photos (center
    # crops), so they show how well the model fits, not how it generalizes.
    return Source("bundled", paths, paths, bad)
  if source == "folder":
    return _folder_source(config)
  if source == "tfds":
    return _tfds_source(config)
  raise DataError(f"config.data.source={source!r} is not known: choose one of "
                  f"{', '.join(configuration.DATA_SOURCES)}")


# ----------------------------------------------------------------------------- train datasets
def _fill_skipped(ds: tf.data.Dataset) -> tf.data.Dataset:
  """(image, ok) -> {"image": image}, each skipped image replaced by the next usable one.

  Position-preserving: the stream keeps one image per position, so batches stay aligned with
  positions and a resumed run sees what an uninterrupted one would have.
  """
  def step(pending, element):
    image, ok = element
    check = tf.debugging.assert_less(
        pending, tf.constant(_MAX_CONSECUTIVE_FAILURES, tf.int64),
        message=f"{_MAX_CONSECUTIVE_FAILURES} consecutive images could not be used (see the "
                "'Skipped' lines above): the data is broken")
    with tf.control_dependencies([check]):
      copies = tf.where(ok, pending + 1, tf.constant(0, tf.int64))
    return (tf.where(ok, tf.constant(0, tf.int64), pending + 1),
            {"image": tf.repeat(image[None], copies, 0)})
  return ds.scan(tf.constant(0, tf.int64), step).unbatch()


def _index_stream(num_images: int, seed: int) -> tf.data.Dataset:
  """Endless image indices: each epoch a permutation seeded by (seed, epoch)."""
  def epoch_indices(epoch):
    perm = tf.random.experimental.stateless_shuffle(
        tf.range(num_images, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    return tf.data.Dataset.from_tensor_slices(perm)
  return tf.data.Dataset.range(2**62).flat_map(epoch_indices)


def _files_train_stream(config, paths: tuple[str, ...], rows, start_step: int, decoder: _Decoder):
  """(image, ok) of this host's rows, positions from start_step * batch_size on."""
  global_batch, (lo, hi) = config.batch_size, rows
  ds = _index_stream(len(paths), config.seed).enumerate()
  ds = ds.skip(start_step * global_batch)
  ds = ds.batch(global_batch, drop_remainder=True)
  ds = ds.map(lambda pos, idx: (pos[lo:hi], idx[lo:hi])).unbatch()
  return ds.map(lambda pos, idx: decoder.file(idx, pos),
                num_parallel_calls=config.data.num_parallel_calls, deterministic=True)


def _host_shard(global_batch: int, rows: tuple[int, int]) -> tuple[int, int]:
  """(shard index, shard count) of the process holding rows [lo, hi) of every global batch."""
  lo, hi = rows
  n = hi - lo
  if n <= 0 or global_batch % n or lo % n:
    raise ValueError(f"rows {rows} of a global batch of {global_batch} are not one of equal "
                     "per-process blocks")
  return lo // n, global_batch // n


def tfds_chunk_splits(split: str, *, shard: int, num_shards: int, num_chunks: int) -> list:
  """This host's shard of `split` (tfds.even_splits, remainder dropped), cut into num_chunks."""
  tfds = _tfds()
  host_split = tfds.even_splits(split, num_shards, drop_remainder=True)[shard]
  return tfds.even_splits(host_split, num_chunks)


def _fold_in(seed: int, salt: int, data):
  # int64 always: folding in the same number as int32 gives other bits (a Python int is int32).
  return tf.random.experimental.stateless_fold_in(tf.constant([seed, salt], tf.int64),
                                                  tf.cast(data, tf.int64))


def _tfds_chunk_order(seed: int, epoch, num_chunks: int):
  epoch_seed = _fold_in(seed, _EPOCH_SALT, epoch)
  return tf.random.experimental.stateless_shuffle(tf.range(num_chunks, dtype=tf.int64),
                                                  seed=epoch_seed)


def _tfds_train_records(config, images: TfdsSplit, *, shard: int, num_shards: int,
                        start: int) -> tf.data.Dataset:
  """This host's endless stream of TFDS records from its local position `start` on.

  Epoch e reads all of the host's chunks in an order permuted by (seed, e), in windows of
  config.data.shuffle_window records shuffled by (seed, e, window); windows restart with each epoch,
  so every epoch visits each example once. All of it is fixed by positions, so the stream can start
  anywhere: at the window holding `start`, skipping whole epochs without reading them and reading
  (without decoding) at most one chunk to get inside the epoch.
  """
  tfds = _tfds()
  host_split = tfds.even_splits(images.split, num_shards, drop_remainder=True)[shard]
  host_size = _cardinality(_tfds_records(images, host_split))
  if not host_size:
    raise DataError(f"config.data.train_split={images.split!r} of {images.name} has no examples "
                    f"for process {shard} of {num_shards}: use a larger split")
  num_chunks = min(_TFDS_CHUNKS, host_size)
  chunks = [_tfds_records(images, s)
            for s in tfds_chunk_splits(images.split, shard=shard, num_shards=num_shards,
                                       num_chunks=num_chunks)]
  sizes = np.array([_cardinality(c) for c in chunks], np.int64)
  sizes_t = tf.constant(sizes)
  window = config.data.shuffle_window

  def epoch_records(epoch, chunk_datasets, skip: int = 0, first_window: int = 0):
    choices = tf.data.Dataset.from_tensor_slices(
        _tfds_chunk_order(config.seed, epoch, num_chunks)).flat_map(
            lambda j: tf.data.Dataset.from_tensors(j).repeat(tf.gather(sizes_t, j)))
    records = tf.data.Dataset.choose_from_datasets(chunk_datasets, choices.skip(skip))
    epoch_seed = _fold_in(config.seed, _WINDOW_SALT, epoch)

    def shuffle_window(w, records):
      order = tf.random.experimental.stateless_shuffle(
          tf.range(tf.shape(records["tfds_id"])[0]),
          seed=tf.random.experimental.stateless_fold_in(epoch_seed, w))
      return {k: tf.gather(v, order) for k, v in records.items()}

    return records.batch(window).enumerate(first_window).map(shuffle_window).unbatch()

  # The epoch holding `start`, from the start of its window: chunks before that point in this
  # epoch's order are not read again, the one holding it is read from inside, the rest in full.
  epoch, offset = divmod(start, int(sizes.sum()))
  first_window = offset // window
  order = _tfds_chunk_order(config.seed, epoch, num_chunks).numpy()
  ends = np.cumsum(sizes[order])
  current = int(np.searchsorted(ends, first_window * window, side="right"))
  inside = int(first_window * window - (ends[current] - sizes[order[current]]))
  first_chunks = [c.skip(inside) if j == order[current] else c for j, c in enumerate(chunks)]
  first = epoch_records(epoch, first_chunks, first_window * window, first_window)
  first = first.skip(offset - first_window * window)
  if config.data.cache:  # encoded records in memory from the first full epoch on
    chunks = [c.cache() for c in chunks]
  rest = tf.data.Dataset.range(epoch + 1, 2**62).flat_map(lambda e: epoch_records(e, chunks))
  return first.concatenate(rest)


def _tfds_train_stream(config, images: TfdsSplit, rows, start_step: int, decoder: _Decoder):
  global_batch, (lo, hi) = config.batch_size, rows
  n = hi - lo
  shard, num_shards = _host_shard(global_batch, rows)
  start = start_step * n
  records = _tfds_train_records(config, images, shard=shard, num_shards=num_shards, start=start)

  def decode(k, record):
    position = (k // n) * global_batch + lo + k % n  # in the global stream: seeds the augmentation
    return decoder.bytes(record[images.image_key], record["tfds_id"], position)

  return records.enumerate(start).map(decode, num_parallel_calls=config.data.num_parallel_calls,
                                      deterministic=True)


def create_train_dataset(config: ml_collections.ConfigDict, images: Images, *,
                         rows: tuple[int, int], start_step: int = 0) -> tf.data.Dataset:
  """Endless batches {"image": uint8 [hi - lo, S, S, 3]}: rows [lo, hi) of every global batch.

  Args:
    config: the run config (image_size, batch_size, seed, data.*).
    images: the training images (Source.train): image files or a TFDS split.
    rows: this process's rows of each global batch (parallel.process_batch_rows).
    start_step: global batches already consumed; the stream continues from there.
  """
  decoder = _Decoder(config, train=True, what="train", paths=() if isinstance(
      images, TfdsSplit) else tuple(images))
  if isinstance(images, TfdsSplit):
    ds = _tfds_train_stream(config, images, rows, start_step, decoder)
  else:
    if not images:
      raise DataError("no training images")
    ds = _files_train_stream(config, tuple(images), rows, start_step, decoder)
  ds = _fill_skipped(ds).batch(rows[1] - rows[0], drop_remainder=True)
  return ds.prefetch(config.data.prefetch)


# ----------------------------------------------------------------------------- eval datasets
def create_eval_dataset(config: ml_collections.ConfigDict, images: Images, *,
                        rows: tuple[int, int]) -> tf.data.Dataset:
  """One pass over the eval images (center crops) in global batches of config.batch_size.

  The last global batch is padded: {"image": uint8 [hi - lo, S, S, 3], "mask": bool [hi - lo]} where
  mask is False on padding and on images skipped at decode time. Every host yields the same number of
  batches, its rows [lo, hi) of each.
  """
  global_batch, (lo, hi) = config.batch_size, rows
  n = hi - lo
  total = num_images(images)
  num_batches = -(-total // global_batch)
  if isinstance(images, TfdsSplit):
    decoder = _Decoder(config, train=False, what="eval")
    ds = _tfds_records(images, images.split).take(total).enumerate()
    ds = ds.filter(lambda i, _: (i % global_batch >= lo) & (i % global_batch < hi))
    ds = ds.map(lambda i, r: decoder.bytes(r[images.image_key], r["tfds_id"], i),
                num_parallel_calls=config.data.num_parallel_calls, deterministic=True)
    # This host's rows of the padded last batch (and of batches past the data, when hosts > images).
    padding = tf.data.Dataset.from_tensors(
        (tf.zeros([config.image_size] * 2 + [3], tf.uint8), tf.constant(False))).repeat()
    ds = ds.concatenate(padding).take(num_batches * n)
  else:
    decoder = _Decoder(config, train=False, what="eval", paths=tuple(images))
    indices = np.full(num_batches * global_batch, -1, np.int64)
    indices[:total] = np.arange(total)
    ds = tf.data.Dataset.from_tensor_slices(indices.reshape(num_batches, global_batch)[:, lo:hi])
    ds = ds.unbatch().map(lambda i: decoder.file(i, i),
                          num_parallel_calls=config.data.num_parallel_calls, deterministic=True)
  ds = ds.map(lambda image, ok: {"image": image, "mask": ok})
  return ds.batch(n).prefetch(config.data.prefetch)


def load_eval_images(config: ml_collections.ConfigDict, images: Images,
                     count: int) -> np.ndarray:
  """The first `count` usable eval images, center-cropped: uint8 [count, S, S, 3] (sample grids).

  Fewer when the eval split holds fewer; DataError when it holds none that can be used.
  """
  size = config.image_size
  decoder = _Decoder(config, train=False, what="eval")
  if isinstance(images, TfdsSplit):
    records = ((r[images.image_key], r["tfds_id"].decode()) for r in
               _tfds_records(images, images.split).as_numpy_iterator())
  else:
    records = ((decoder.read(p), p) for p in images)
  found, tried = [], 0
  for data, name in records:
    if len(found) == count:
      break
    tried += 1
    image, ok = decoder.decode(data, name, -1)
    if ok:
      found.append(image)
  if count and not found:
    raise DataError(f"none of the {tried} eval images of config.data.source="
                    f"{config.data.source!r} could be decoded (see the 'Skipped' lines above)")
  return np.stack(found) if found else np.zeros((0, size, size, 3), np.uint8)
