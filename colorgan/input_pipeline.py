"""Photos -> batches of uint8 RGB crops for this host. Lab conversion happens on device, in the step.

The training stream is a pure function of (seed, position): epoch e visits the images in the order of a
permutation seeded by (seed, e), and the crop and flip of the k-th example of the stream are seeded by
(seed, k). Resuming at step N therefore skips N global batches of *indices* (cheap: nothing is decoded)
and continues with the very batches an uninterrupted run would have seen, on any number of hosts: each
host decodes only its own rows of every global batch.
"""

import dataclasses
import os

import ml_collections
import numpy as np
import tensorflow as tf

# The natural color photos shipped inside scikit-image and scikit-learn (no download).
_SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                   "motorcycle_left.png", "motorcycle_right.png")
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


@dataclasses.dataclass(frozen=True)
class Source:
  """Image files of one data source, split for training and evaluation."""
  name: str
  train_paths: tuple[str, ...]
  eval_paths: tuple[str, ...]


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


def create_source(config: ml_collections.ConfigDict) -> Source:
  """The image files named by `config.data.source`."""
  if config.data.source == "bundled":
    paths = bundled_photo_paths()
    # Eight photos leave nothing to hold out: evaluation and samples use the same photos (center
    # crops), so they show how well the model fits, not how it generalizes.
    return Source("bundled", paths, paths)
  raise ValueError(f"config.data.source={config.data.source!r} is not known: use 'bundled'")


# ----------------------------------------------------------------------------- preprocessing (tf.data)
def _decode_rgb(path):
  """A file -> uint8 [H, W, 3] (grayscale and RGBA files converted; 16-bit scaled to 8)."""
  image = tf.io.decode_image(tf.io.read_file(path), channels=3, dtype=tf.uint8,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _resize(image, size):
  resized = tf.image.resize(image, size, method="bilinear", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _resize_short_side(image, short_side: int):
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  scale = short_side / tf.cast(tf.minimum(h, w), tf.float32)
  new_h = tf.maximum(short_side, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
  new_w = tf.maximum(short_side, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
  return _resize(image, tf.stack([new_h, new_w]))


def preprocess(image, *, image_size: int, load_size: int, resize_mode: str, train: bool,
               random_flip: bool, seed=None):
  """uint8 [H, W, 3] -> uint8 [image_size, image_size, 3].

  crop mode: resize the short side to load_size, then crop image_size (random when training, the
  center otherwise). resize mode: the tutorial's plain resize to a square, no crop.
  """
  if resize_mode == "resize":
    image = _resize(image, [image_size, image_size])
  else:
    image = _resize_short_side(image, max(load_size, image_size))
    if train:
      crop_seed, seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
      image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed=crop_seed)
    else:
      h, w = tf.shape(image)[0], tf.shape(image)[1]
      top, left = (h - image_size) // 2, (w - image_size) // 2
      image = image[top:top + image_size, left:left + image_size]
  if train and random_flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=seed)
  image.set_shape([image_size, image_size, 3])
  return image


# ----------------------------------------------------------------------------- datasets
def _index_stream(num_images: int, seed: int) -> tf.data.Dataset:
  """Endless image indices: each epoch a permutation seeded by (seed, epoch)."""
  def epoch_indices(epoch):
    perm = tf.random.experimental.stateless_shuffle(
        tf.range(num_images, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    return tf.data.Dataset.from_tensor_slices(perm)
  return tf.data.Dataset.range(2**62).flat_map(epoch_indices)


def create_train_dataset(config: ml_collections.ConfigDict, paths: tuple[str, ...], *,
                         rows: tuple[int, int], start_step: int = 0) -> tf.data.Dataset:
  """Endless batches {"image": uint8 [hi - lo, S, S, 3]}: rows [lo, hi) of every global batch.

  Args:
    config: the run config (image_size, batch_size, seed, data.*).
    paths: the training image files.
    rows: this process's rows of each global batch (parallel.process_batch_rows).
    start_step: global batches already consumed; the stream continues from there.
  """
  global_batch, (lo, hi) = config.batch_size, rows
  paths_t = tf.constant(list(paths))
  base_seed = tf.constant([config.seed, 0], tf.int64)

  def load(position, index):
    # Augmentation depends on the position in the global stream only: reproducible and host-count
    # independent.
    seed = tf.random.experimental.stateless_fold_in(base_seed, position)
    return {"image": preprocess(
        _decode_rgb(tf.gather(paths_t, index)), image_size=config.image_size,
        load_size=config.data.load_size, resize_mode=config.data.resize_mode, train=True,
        random_flip=config.data.random_flip, seed=seed)}

  ds = _index_stream(len(paths), config.seed).enumerate()
  ds = ds.skip(start_step * global_batch)
  ds = ds.batch(global_batch, drop_remainder=True)
  ds = ds.map(lambda pos, idx: (pos[lo:hi], idx[lo:hi])).unbatch()
  ds = ds.map(load, num_parallel_calls=config.data.num_parallel_calls, deterministic=True)
  ds = ds.batch(hi - lo, drop_remainder=True)
  return ds.prefetch(config.data.prefetch)


def create_eval_dataset(config: ml_collections.ConfigDict, paths: tuple[str, ...], *,
                        rows: tuple[int, int]) -> tf.data.Dataset:
  """One pass over the eval photos (center crops) in global batches of config.batch_size.

  The last global batch is padded: {"image": uint8 [hi - lo, S, S, 3], "mask": bool [hi - lo]} where
  mask is False on padding. Every host yields the same number of batches, its rows [lo, hi) of each.
  """
  global_batch, (lo, hi) = config.batch_size, rows
  num_batches = -(-len(paths) // global_batch)
  indices = np.full(num_batches * global_batch, -1, np.int64)
  indices[:len(paths)] = np.arange(len(paths))
  paths_t = tf.constant(list(paths))

  def load(index):
    def decode():
      return preprocess(_decode_rgb(tf.gather(paths_t, index)), image_size=config.image_size,
                        load_size=config.data.load_size, resize_mode=config.data.resize_mode,
                        train=False, random_flip=False)
    padding = lambda: tf.zeros([config.image_size] * 2 + [3], tf.uint8)  # noqa: E731
    return {"image": tf.cond(index >= 0, decode, padding), "mask": index >= 0}

  ds = tf.data.Dataset.from_tensor_slices(indices.reshape(num_batches, global_batch)[:, lo:hi])
  ds = ds.unbatch().map(load, num_parallel_calls=config.data.num_parallel_calls,
                        deterministic=True)
  return ds.batch(hi - lo).prefetch(config.data.prefetch)


def load_eval_images(config: ml_collections.ConfigDict, paths: tuple[str, ...],
                     count: int) -> np.ndarray:
  """The first `count` eval photos, center-cropped: uint8 [count, S, S, 3] (for sample grids)."""
  images = [preprocess(_decode_rgb(p), image_size=config.image_size,
                       load_size=config.data.load_size, resize_mode=config.data.resize_mode,
                       train=False, random_flip=False).numpy()
            for p in paths[:count]]
  return np.stack(images)
