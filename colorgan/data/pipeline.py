"""A source's images -> batches of uint8 RGB crops for this host. Lab conversion happens on device.

Every image, whatever its source, is decoded by Pillow (`colorgan.data.decode`) inside the tf.data
graph: a numpy_function over the encoded bytes, the resize and crop done in the same call. The
images of a source (`Images`: `sources.FileImages`, `tfds_source.TfdsImages`) give their streams of
encoded images through `Decoder`; this module fills the slots of skipped images, batches and
prefetches, whichever source it reads.

The training stream is a pure function of (seed, position): the crop and flip of the k-th example of
the global stream are seeded by (seed, k), and the sources order their examples by position too, so
a resumed run (`start_step`) continues with the very batches an uninterrupted run would have seen.

Bad data never stops training. Files that cannot be used are found at start (`sources`); what only
shows at decode time (a corrupt stream, an RGB file holding a black-and-white photo, a bad TFDS
example) is logged and its slot in the stream is filled by the next usable example of this host, so
positions, resumption and batch shapes are unaffected.
"""

import atexit
import functools
import gc
import sys
from typing import Iterator, Protocol

import ml_collections
import numpy as np
import tensorflow as tf

from colorgan import errors
from colorgan.data import decode

# More consecutive unusable examples than this means the data, not an example, is broken.
_MAX_CONSECUTIVE_FAILURES = 1000
# Salt of the crops' random numbers (the tfds source salts its orders with 1 and 2).
_AUGMENT_SALT = 0


class Decoder:
  """The decode step of a tf.data pipeline: a numpy_function around `decode.decode_image`.

  `file` and `bytes` return (image uint8 [S, S, 3], ok bool). A skipped image is logged and comes
  back as zeros with ok=False; the pipeline decides what fills its place.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, train: bool, what: str):
    self._kwargs = dict(
      image_size=config.image_size,
      load_size=config.data.load_size,
      resize_mode=config.data.resize_mode,
      random_flip=train and config.data.random_flip,
    )
    self._seed = config.seed
    self._train = train
    self._cache = {} if config.data.cache else None
    self._log = decode.SkipLog(what)
    self._size = config.image_size

  def decode(self, data: bytes, name: str, position: int) -> tuple[np.ndarray, bool]:
    """Python side: (image, ok), logging a skipped image."""
    rng = (
      np.random.default_rng([self._seed % 2**64, _AUGMENT_SALT, position]) if self._train else None
    )
    image, problem = decode.decode_image(data, rng=rng, **self._kwargs)
    if problem:
      self._log(name, problem)
      return np.zeros((self._size, self._size, 3), np.uint8), False
    return image, True

  def read(self, path: str) -> bytes:
    """The bytes of a file (b"" when it cannot be read), cached when config.data.cache."""
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

  def _decode_index(self, paths, index, position):
    if index < 0:  # padding of the last eval batch
      return np.zeros((self._size, self._size, 3), np.uint8), False
    path = paths[index]
    return self.decode(self.read(path), path, int(position))

  def _decode_bytes(self, data, name, position):
    return self.decode(data, name.decode("utf-8", "replace"), int(position))

  def _finish(self, image, ok):
    image.set_shape([self._size, self._size, 3])
    ok.set_shape([])
    return image, ok

  def file(self, paths: tuple[str, ...], index: tf.Tensor, position: tf.Tensor):
    """paths[index] (index -1: padding), decoded; position in the global stream seeds the crop."""
    return self._finish(
      *tf.numpy_function(
        functools.partial(self._decode_index, paths), [index, position], [tf.uint8, tf.bool]
      )
    )

  def bytes(self, data: tf.Tensor, name: tf.Tensor, position: tf.Tensor):
    """Encoded image bytes, a name for the log, global stream position."""
    return self._finish(
      *tf.numpy_function(self._decode_bytes, [data, name, position], [tf.uint8, tf.bool])
    )


class Images(Protocol):
  """The training or the eval images of a source: what the pipeline reads of them."""

  @property
  def num_images(self) -> int:
    """How many images (usable or not at decode time)."""

  def first(self, n: int) -> "Images":
    """The first n images."""

  def train_stream(
    self,
    config: ml_collections.ConfigDict,
    rows: tuple[int, int],
    start_step: int,
    decoder: Decoder,
  ) -> tf.data.Dataset:
    """Endless (image, ok) of this host's rows [lo, hi) of every global batch from start_step on."""

  def eval_stream(
    self, config: ml_collections.ConfigDict, rows: tuple[int, int], decoder: Decoder
  ) -> tf.data.Dataset:
    """(image, ok) of this host's rows of every global batch, the last one padded (ok=False)."""

  def eval_records(self, decoder: Decoder) -> Iterator[tuple[bytes, str]]:
    """(encoded bytes, name) of each image in order, read lazily."""


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


@functools.cache  # once, when the first pipeline is built: importing registers nothing
def _close_pipelines_at_exit() -> None:
  atexit.register(_close_pipelines_of_a_crash)


def _fill_skipped(ds: tf.data.Dataset) -> tf.data.Dataset:
  """(image, ok) -> {"image": image}, each skipped image replaced by the next usable one.

  Position-preserving: the stream keeps one image per position, so batches stay aligned with
  positions and a resumed run sees what an uninterrupted one would have.
  """

  def step(pending, element):
    image, ok = element
    check = tf.debugging.assert_less(
      pending,
      tf.constant(_MAX_CONSECUTIVE_FAILURES, tf.int64),
      message=f"{_MAX_CONSECUTIVE_FAILURES} consecutive images could not be used (see the "
      "'Skipped' lines above): the data is broken",
    )
    with tf.control_dependencies([check]):
      copies = tf.where(ok, pending + 1, tf.constant(0, tf.int64))
    return (
      tf.where(ok, tf.constant(0, tf.int64), pending + 1),
      {"image": tf.repeat(image[None], copies, 0)},
    )

  return ds.scan(tf.constant(0, tf.int64), step).unbatch()


def create_train_dataset(
  config: ml_collections.ConfigDict, images: Images, *, rows: tuple[int, int], start_step: int = 0
) -> tf.data.Dataset:
  """Endless batches {"image": uint8 [hi - lo, S, S, 3]}: rows [lo, hi) of every global batch.

  Args:
    config: the run config (image_size, batch_size, seed, data.*).
    images: the training images (Source.train): image files or a TFDS split.
    rows: this process's rows of each global batch (parallel.process_batch_rows).
    start_step: global batches already consumed; the stream continues from there.
  """
  _close_pipelines_at_exit()
  decoder = Decoder(config, train=True, what="train")
  ds = _fill_skipped(images.train_stream(config, rows, start_step, decoder))
  ds = ds.batch(rows[1] - rows[0], drop_remainder=True)
  return ds.prefetch(config.data.prefetch)


def create_eval_dataset(
  config: ml_collections.ConfigDict, images: Images, *, rows: tuple[int, int]
) -> tf.data.Dataset:
  """One pass over the eval images (center crops) in global batches of config.batch_size.

  The last global batch is padded: {"image": uint8 [hi - lo, S, S, 3], "mask": bool [hi - lo]} where
  mask is False on padding and on images skipped at decode time. Every host yields the same number of
  batches, its rows [lo, hi) of each.
  """
  _close_pipelines_at_exit()
  decoder = Decoder(config, train=False, what="eval")
  ds = images.eval_stream(config, rows, decoder)
  ds = ds.map(lambda image, ok: {"image": image, "mask": ok})
  return ds.batch(rows[1] - rows[0]).prefetch(config.data.prefetch)


def load_eval_images(config: ml_collections.ConfigDict, images: Images, count: int) -> np.ndarray:
  """The first `count` usable eval images, center-cropped: uint8 [count, S, S, 3] (sample grids).

  Fewer when the eval split holds fewer; DataError when it holds none that can be used.
  """
  _close_pipelines_at_exit()
  size = config.image_size
  decoder = Decoder(config, train=False, what="eval")
  found, tried = [], 0
  for data, name in images.eval_records(decoder):
    if len(found) == count:
      break
    tried += 1
    image, ok = decoder.decode(data, name, -1)
    if ok:
      found.append(image)
  if count and not found:
    raise errors.DataError(
      f"none of the {tried} eval images of config.data.source="
      f"{config.data.source!r} could be decoded (see the 'Skipped' lines "
      "above)"
    )
  return np.stack(found) if found else np.zeros((0, size, size, 3), np.uint8)
