"""Where the photos come from: the bundled photos, a folder of image files, or a TFDS split.

Three sources, picked by `config.data.source`:
  bundled  the color photos shipped inside scikit-image and scikit-learn (the quickstart);
  folder   a directory of images, read recursively (`config.data.path`);
  tfds     any TFDS image dataset (`config.data.tfds_name`, split syntax in `train_split`/`eval_split`).

A source's training and eval images are `FileImages` (bundled, folder) or `tfds_source.TfdsImages`:
two classes with one interface (`pipeline.Images`), whose streams of encoded images the pipeline
decodes without asking which kind it has.

Files: epoch e visits the images in a permutation seeded by (seed, e); each host decodes only its
rows [lo, hi) of every global batch, so the global batch is the same for any number of hosts, and
resuming skips indices (nothing is read).

TensorFlow is imported when a stream is built, TFDS when the tfds source is opened: listing or
checking files (fid, serve) loads neither.
"""

import dataclasses
import hashlib
import os
from typing import TYPE_CHECKING, Iterator

from absl import logging
import ml_collections
import numpy as np

from colorgan import errors
from colorgan.data import decode

if TYPE_CHECKING:
  import tensorflow as tf
  from colorgan.data import pipeline

# The natural color photos shipped inside scikit-image and scikit-learn (no download).
_SKIMAGE_PHOTOS = (
  "astronaut.png",
  "chelsea.png",
  "coffee.png",
  "rocket.jpg",
  "motorcycle_left.png",
  "motorcycle_right.png",
)
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name  (seconds)

  return tf


@dataclasses.dataclass(frozen=True)
class Source:
  """The images of one data source, split for training and evaluation."""

  name: str
  train: "pipeline.Images"
  eval: "pipeline.Images"
  skipped: tuple[tuple[str, str], ...] = ()  # (path, reason) of the files found unusable at start


# ----------------------------------------------------------------------------- files
@dataclasses.dataclass(frozen=True)
class FileImages:
  """Image files (the bundled photos, a folder's), read by path; iterates over the paths."""

  paths: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.paths)

  def __iter__(self) -> Iterator[str]:
    return iter(self.paths)

  @property
  def num_images(self) -> int:
    return len(self.paths)

  def first(self, n: int) -> "FileImages":
    return FileImages(self.paths[:n])

  def train_stream(
    self,
    config: ml_collections.ConfigDict,
    rows: tuple[int, int],
    start_step: int,
    decoder: "pipeline.Decoder",
  ) -> "tf.data.Dataset":
    tf = _tf()
    if not self.paths:
      raise errors.DataError("no training images")
    global_batch, (lo, hi) = config.batch_size, rows
    num_images, seed = len(self.paths), config.seed

    def epoch_indices(epoch):  # each epoch a permutation seeded by (seed, epoch)
      perm = tf.random.experimental.stateless_shuffle(
        tf.range(num_images, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
      )
      return tf.data.Dataset.from_tensor_slices(perm)

    ds = tf.data.Dataset.range(2**62).flat_map(epoch_indices).enumerate()
    ds = ds.skip(start_step * global_batch)
    ds = ds.batch(global_batch, drop_remainder=True)
    ds = ds.map(lambda pos, idx: (pos[lo:hi], idx[lo:hi])).unbatch()
    return ds.map(
      lambda pos, idx: decoder.file(self.paths, idx, pos),
      num_parallel_calls=config.data.num_parallel_calls,
      deterministic=True,
    )

  def eval_stream(
    self, config: ml_collections.ConfigDict, rows: tuple[int, int], decoder: "pipeline.Decoder"
  ) -> "tf.data.Dataset":
    tf = _tf()
    global_batch, (lo, hi) = config.batch_size, rows
    total = len(self.paths)
    num_batches = -(-total // global_batch)
    indices = np.full(num_batches * global_batch, -1, np.int64)  # -1: padding of the last batch
    indices[:total] = np.arange(total)
    ds = tf.data.Dataset.from_tensor_slices(indices.reshape(num_batches, global_batch)[:, lo:hi])
    return ds.unbatch().map(
      lambda i: decoder.file(self.paths, i, i),
      num_parallel_calls=config.data.num_parallel_calls,
      deterministic=True,
    )

  def eval_records(self, decoder: "pipeline.Decoder") -> Iterator[tuple[bytes, str]]:
    return ((decoder.read(p), p) for p in self.paths)


def bundled_photo_paths() -> tuple[str, ...]:
  import skimage.data  # pylint: disable=g-import-not-at-top
  import sklearn.datasets  # pylint: disable=g-import-not-at-top

  skimage_dir = os.path.dirname(skimage.data.__file__)
  sklearn_dir = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
  paths = tuple(os.path.join(skimage_dir, f) for f in _SKIMAGE_PHOTOS)
  paths += tuple(os.path.join(sklearn_dir, f) for f in _SKLEARN_PHOTOS)
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(
      f"bundled photo {missing[0]} is missing: reinstall scikit-image and "
      "scikit-learn (pip install -e .)"
    )
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


def _bundled_source(config: ml_collections.ConfigDict) -> Source:
  del config  # the same photos for every config
  paths, bad = decode.check_image_files(bundled_photo_paths(), what="bundled")
  decode.report_checked_files("bundled photos", len(paths) + len(bad), len(paths), bad)
  # Eight photos leave nothing to hold out: evaluation and samples use the same photos (center
  # crops), so they show how well the model fits, not how it generalizes.
  return Source("bundled", FileImages(paths), FileImages(paths), bad)


def _in_eval_split(rel_path: str, *, seed: int, fraction: float) -> bool:
  """A seeded hash of the relative path: stable when files are added, removed or reordered."""
  digest = hashlib.sha256(f"{seed}:{rel_path}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _folder_files(root: str, config: ml_collections.ConfigDict):
  """(train files, eval files, how they were split) of a folder."""
  train_dir, eval_dir = os.path.join(root, "train"), None
  for name in ("val", "validation"):
    if os.path.isdir(train_dir) and os.path.isdir(os.path.join(root, name)):
      eval_dir = os.path.join(root, name)
      break
  if eval_dir:  # the folder's own split
    train_files = tuple(os.path.join(train_dir, p) for p in list_image_files(train_dir))
    eval_files = tuple(os.path.join(eval_dir, p) for p in list_image_files(eval_dir))
    return train_files, eval_files, f"train/ and {os.path.basename(eval_dir)}/ subfolders"
  rel = list_image_files(root)
  in_eval = [
    _in_eval_split(p, seed=config.data.split_seed, fraction=config.data.eval_fraction) for p in rel
  ]
  train_files = tuple(os.path.join(root, p) for p, e in zip(rel, in_eval) if not e)
  eval_files = tuple(os.path.join(root, p) for p, e in zip(rel, in_eval) if e)
  return train_files, eval_files, f"eval_fraction={config.data.eval_fraction} by hash"


def _folder_source(config: ml_collections.ConfigDict) -> Source:
  root = os.path.abspath(os.path.expanduser(config.data.path))
  key = f"config.data.path={config.data.path}"
  # configuration.validate says so too; tests and benchmarks build sources from unchecked configs.
  if not config.data.path:
    raise errors.DataError(
      "config.data.source='folder' needs config.data.path: add --config.data.path=/path/to/photos"
    )
  if not os.path.isdir(root):
    raise errors.DataError(f"{key} is not a directory: point it at a folder of images")
  train_files, eval_files, split_note = _folder_files(root, config)
  num_files = len(train_files) + len(eval_files)
  if not num_files:
    raise errors.DataError(
      f"{key} holds no image files ({' '.join(IMAGE_EXTENSIONS)}, any case, "
      "searched recursively): point it at a folder of photos"
    )
  train, train_bad = decode.check_image_files(train_files, what="train")
  evals, eval_bad = decode.check_image_files(eval_files, what="eval")
  bad = train_bad + eval_bad
  decode.report_checked_files(root, num_files, len(train) + len(evals), bad)
  if not train and not evals:
    raise errors.DataError(
      f"{key}: none of its {num_files} image files is usable "
      f"({decode.reason_counts(bad)}); colorgan needs color photos"
    )
  if not train or not evals:
    # Too few files to hold some out (or an empty train/ or val/): train and evaluate on the same
    # photos, as the bundled source does.
    logging.warning(
      "Data: %s: %s leaves %d train and %d eval images: using all %d for both",
      root,
      split_note,
      len(train),
      len(evals),
      len(train) + len(evals),
    )
    train = evals = tuple(sorted(train + evals))
  logging.info("Data: %s: %d train, %d eval images (%s)", root, len(train), len(evals), split_note)
  return Source("folder", FileImages(train), FileImages(evals), bad)


def _tfds_source(config: ml_collections.ConfigDict) -> Source:
  # pylint: disable-next=g-import-not-at-top  (TensorFlow and TFDS: seconds to import)
  from colorgan.data import tfds_source

  train, evals = tfds_source.open_splits(config)
  return Source("tfds", train, evals)


# ----------------------------------------------------------------------------- choosing one
_SOURCES = {"bundled": _bundled_source, "folder": _folder_source, "tfds": _tfds_source}


def create_source(config: ml_collections.ConfigDict) -> Source:
  """The images named by `config.data.*`, checked. Raises DataError (one line) when none is usable."""
  make = _SOURCES.get(config.data.source)
  if make is None:
    raise errors.DataError(
      f"config.data.source={config.data.source!r} is not known: choose one of {', '.join(_SOURCES)}"
    )
  return make(config)
