"""The tfds source: a split of any TFDS image dataset, read as encoded images.

`config.data.tfds_name`, with TFDS split syntax in `train_split`/`eval_split`; the pipeline decodes
the images (`image_key`) as it decodes files. Each host reads its own shard of the split
(`tfds.even_splits`, one per process). Epoch e reads the host's shard as 16 chunks in an order
permuted by (seed, e), shuffled in windows of `config.data.shuffle_window` examples seeded by
(seed, e, window). Resuming skips whole epochs for free and reads (without decoding) at most one
chunk. The stream depends on the number of processes.

Imported by `sources.create_source` for this source only: TensorFlow and TFDS take seconds to
import.
"""

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Iterator

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from colorgan import errors

if TYPE_CHECKING:
  from colorgan.data import pipeline

# A host's shard is read as this many chunks, whose order is permuted every epoch.
_TFDS_CHUNKS = 16
# Salts that keep the streams of random numbers apart (0 seeds the crops: pipeline._AUGMENT_SALT).
_EPOCH_SALT, _WINDOW_SALT = 1, 2


@dataclasses.dataclass(frozen=True)
class TfdsImages:
  """A split of a TFDS dataset, read as encoded images (decoded by the pipeline)."""

  name: str  # e.g. "coco/2017"
  split: str  # TFDS split syntax, e.g. "train[:8000]"
  data_dir: str | None
  image_key: str
  num_examples: int

  @property
  def num_images(self) -> int:
    return self.num_examples

  def first(self, n: int) -> "TfdsImages":
    return dataclasses.replace(self, num_examples=min(n, self.num_examples))

  def records(self, split: Any) -> tf.data.Dataset:
    """{image_key: encoded bytes, "tfds_id": its id} of `split`, in the dataset's own order."""
    builder = tfds.builder(self.name, data_dir=self.data_dir)
    key = self.image_key
    return builder.as_dataset(
      split=split,
      shuffle_files=False,
      decoders=tfds.decode.PartialDecoding({key: True}, decoders={key: tfds.decode.SkipDecoding()}),
      read_config=tfds.ReadConfig(add_tfds_id=True, skip_prefetch=True, try_autocache=False),
    )

  def train_stream(
    self,
    config: ml_collections.ConfigDict,
    rows: tuple[int, int],
    start_step: int,
    decoder: "pipeline.Decoder",
  ) -> tf.data.Dataset:
    global_batch, (lo, hi) = config.batch_size, rows
    n = hi - lo
    shard, num_shards = _host_shard(global_batch, rows)
    start = start_step * n
    records = self._train_records(config, shard=shard, num_shards=num_shards, start=start)

    def decode_record(k, record):
      position = (k // n) * global_batch + lo + k % n  # in the global stream: seeds the crop
      return decoder.bytes(record[self.image_key], record["tfds_id"], position)

    return records.enumerate(start).map(
      decode_record, deterministic=True, num_parallel_calls=config.data.num_parallel_calls
    )

  def _train_records(
    self, config: ml_collections.ConfigDict, *, shard: int, num_shards: int, start: int
  ) -> tf.data.Dataset:
    """This host's endless stream of TFDS records from its local position `start` on.

    Epoch e reads all of the host's chunks in an order permuted by (seed, e), in windows of
    config.data.shuffle_window records shuffled by (seed, e, window); windows restart with each
    epoch, so every epoch visits each example once. All of it is fixed by positions, so the stream
    can start anywhere: at the window holding `start`, skipping whole epochs without reading them
    and reading (without decoding) at most one chunk to get inside the epoch.
    """
    host_split = tfds.even_splits(self.split, num_shards, drop_remainder=True)[shard]
    host_size = _cardinality(self.records(host_split))
    if not host_size:
      raise errors.DataError(
        f"config.data.train_split={self.split!r} of {self.name} has no "
        f"examples for process {shard} of {num_shards}: use a larger split"
      )
    num_chunks = min(_TFDS_CHUNKS, host_size)
    chunks = [
      self.records(s)
      for s in tfds_chunk_splits(
        self.split, shard=shard, num_shards=num_shards, num_chunks=num_chunks
      )
    ]
    sizes = np.array([_cardinality(c) for c in chunks], np.int64)
    sizes_t = tf.constant(sizes)
    window = config.data.shuffle_window

    def epoch_records(epoch, chunk_datasets, skip: int = 0, first_window: int = 0):
      choices = tf.data.Dataset.from_tensor_slices(
        _chunk_order(config.seed, epoch, num_chunks)
      ).flat_map(lambda j: tf.data.Dataset.from_tensors(j).repeat(tf.gather(sizes_t, j)))
      records = tf.data.Dataset.choose_from_datasets(chunk_datasets, choices.skip(skip))
      epoch_seed = _fold_in(config.seed, _WINDOW_SALT, epoch)

      def shuffle_window(w, records):
        order = tf.random.experimental.stateless_shuffle(
          tf.range(tf.shape(records["tfds_id"])[0]),
          seed=tf.random.experimental.stateless_fold_in(epoch_seed, w),
        )
        return {k: tf.gather(v, order) for k, v in records.items()}

      return records.batch(window).enumerate(first_window).map(shuffle_window).unbatch()

    # The epoch holding `start`, from the start of its window: chunks before that point in this
    # epoch's order are not read again, the one holding it is read from inside, the rest in full.
    epoch, offset = divmod(start, int(sizes.sum()))
    first_window = offset // window
    order = _chunk_order(config.seed, epoch, num_chunks).numpy()
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

  def eval_stream(
    self, config: ml_collections.ConfigDict, rows: tuple[int, int], decoder: "pipeline.Decoder"
  ) -> tf.data.Dataset:
    global_batch, (lo, hi) = config.batch_size, rows
    num_batches = -(-self.num_examples // global_batch)
    ds = self.records(self.split).take(self.num_examples).enumerate()
    ds = ds.filter(lambda i, _: (i % global_batch >= lo) & (i % global_batch < hi))
    ds = ds.map(
      lambda i, r: decoder.bytes(r[self.image_key], r["tfds_id"], i),
      num_parallel_calls=config.data.num_parallel_calls,
      deterministic=True,
    )
    # This host's rows of the padded last batch (and of batches past the data, when hosts > images).
    padding = tf.data.Dataset.from_tensors(
      (tf.zeros([config.image_size] * 2 + [3], tf.uint8), tf.constant(False))
    ).repeat()
    return ds.concatenate(padding).take(num_batches * (hi - lo))

  def eval_records(self, decoder: "pipeline.Decoder") -> Iterator[tuple[bytes, str]]:
    del decoder  # the records hold the bytes
    return (
      (r[self.image_key], r["tfds_id"].decode())
      for r in self.records(self.split).take(self.num_examples).as_numpy_iterator()
    )


def _cardinality(ds: tf.data.Dataset) -> int:
  n = int(ds.cardinality())
  if n < 0:  # unknown: count (bytes only, nothing is decoded)
    n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
  return n


def _host_shard(global_batch: int, rows: tuple[int, int]) -> tuple[int, int]:
  """(shard index, shard count) of the process holding rows [lo, hi) of every global batch."""
  lo, hi = rows
  n = hi - lo
  if n <= 0 or global_batch % n or lo % n:
    raise ValueError(
      f"rows {rows} of a global batch of {global_batch} are not one of equal per-process blocks"
    )
  return lo // n, global_batch // n


def tfds_chunk_splits(split: str, *, shard: int, num_shards: int, num_chunks: int) -> list:
  """This host's shard of `split` (tfds.even_splits, remainder dropped), cut into num_chunks."""
  host_split = tfds.even_splits(split, num_shards, drop_remainder=True)[shard]
  return tfds.even_splits(host_split, num_chunks)


def _fold_in(seed: int, salt: int, data):
  # int64 always: folding in the same number as int32 gives other bits (a Python int is int32).
  return tf.random.experimental.stateless_fold_in(
    tf.constant([seed, salt], tf.int64), tf.cast(data, tf.int64)
  )


def _chunk_order(seed: int, epoch, num_chunks: int):
  return tf.random.experimental.stateless_shuffle(
    tf.range(num_chunks, dtype=tf.int64), seed=_fold_in(seed, _EPOCH_SALT, epoch)
  )


def _tfds_builder(cfg: ml_collections.ConfigDict, data_dir: str | None):
  """The dataset's builder, its image feature checked and its data prepared when asked."""
  try:
    builder = tfds.builder(cfg.tfds_name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except  (DatasetNotFoundError and friends)
    raise errors.DataError(
      f"config.data.tfds_name={cfg.tfds_name!r} is not a TFDS dataset "
      f"({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    ) from None
  features = builder.info.features
  if cfg.image_key not in features or not isinstance(features[cfg.image_key], tfds.features.Image):
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    raise errors.DataError(
      f"config.data.image_key={cfg.image_key!r} is not an image feature of "
      f"{cfg.tfds_name}: its image features are {images or 'none'}"
    )
  if features[cfg.image_key].shape[-1] == 1:
    raise errors.DataError(
      f"{cfg.tfds_name}'s {cfg.image_key!r} images are grayscale: colorgan needs color photos"
    )
  if cfg.tfds_download:
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except  (network, disk, manual downloads)
      raise errors.DataError(
        f"config.data.tfds_name={cfg.tfds_name!r} could not be downloaded "
        f"and prepared: {type(e).__name__}: "
        f"{' '.join(str(e).split())[:300]}"
      ) from None
  return builder


def _tfds_split(cfg: ml_collections.ConfigDict, data_dir: str | None, key: str) -> TfdsImages:
  """config.data.<key> (train_split or eval_split), counted."""
  split = cfg[key]
  images = TfdsImages(cfg.tfds_name, split, data_dir, cfg.image_key, 0)
  try:
    count = _cardinality(images.records(split))
  except AssertionError as e:  # TFDS's "could not find data in ..."
    if "could not find data" not in str(e):
      raise
    where = data_dir or "the TFDS data dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
    raise errors.DataError(
      f"config.data.tfds_name={cfg.tfds_name!r} is not prepared in {where}: run "
      f"`tfds build {cfg.tfds_name}` (with --data_dir, and --manual_dir where the dataset needs "
      "a manual download) or set --config.data.tfds_download=True"
    ) from None
  except (ValueError, KeyError, tf.errors.OpError) as e:
    raise errors.DataError(
      f"config.data.{key}={split!r} is not a split of {cfg.tfds_name} "
      f"({' '.join(str(e).split())[:200]})"
    ) from None
  if not count:
    raise errors.DataError(f"config.data.{key}={split!r} of {cfg.tfds_name} holds no examples")
  return dataclasses.replace(images, num_examples=count)


def open_splits(config: ml_collections.ConfigDict) -> tuple[TfdsImages, TfdsImages]:
  """The train and eval splits named by config.data.*, checked and counted; DataError (one line)."""
  cfg = config.data
  # configuration.validate says so too; tests and benchmarks build sources from unchecked configs.
  if not cfg.tfds_name:
    raise errors.DataError(
      "config.data.source='tfds' needs config.data.tfds_name: e.g. "
      "--config.data.tfds_name=coco/2017"
    )
  data_dir = os.path.expanduser(cfg.tfds_data_dir) if cfg.tfds_data_dir else None
  _tfds_builder(cfg, data_dir)
  train, evals = _tfds_split(cfg, data_dir, "train_split"), _tfds_split(cfg, data_dir, "eval_split")
  logging.info(
    "Data: TFDS %s: train %r (%d examples), eval %r (%d examples)",
    cfg.tfds_name,
    cfg.train_split,
    train.num_examples,
    cfg.eval_split,
    evals.num_examples,
  )
  return train, evals
