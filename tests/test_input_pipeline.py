"""The input pipeline: folders with bad files, TFDS (mocked, offline), determinism, resume, sharding."""

import io
import logging
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import jax
import numpy as np
from PIL import Image
import pytest
import skimage.data
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import splits as splits_lib

from colorgan import configuration
from colorgan import errors
from colorgan.data import decode
from colorgan.data import pipeline
from colorgan.data import sources
from colorgan.data import tfds_source
from colorgan import models
from colorgan import parallel
from colorgan.training import step as step_lib
from tests.conftest import tiny_config

# ----------------------------------------------------------------------------- test images
_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry")


def _photo(index: int, size=(48, 40)) -> np.ndarray:
  """A small color photo (uint8 [h, w, 3]) cut from scikit-image's samples."""
  image = getattr(skimage.data, _PHOTOS[index % len(_PHOTOS)])()[..., :3]
  return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, fmt, **kwargs)
  return buf.getvalue()


def _write(path, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def _png_header_only(width: int, height: int) -> bytes:
  """A PNG declaring width x height RGB pixels in a few bytes: a decompression bomb's header."""

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  return (
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    + chunk(b"IEND", b"")
  )


def _solid(color, size=(40, 36)) -> np.ndarray:
  return np.broadcast_to(np.array(color, np.uint8), (size[1], size[0], 3)).copy()


def _solid_color(index: int):
  """Distinct, saturated colors (PNG keeps them exact): index = green // 5."""
  return (255, 5 * index, 0)


def _index_of(images: np.ndarray) -> list[int]:
  """Solid-color crops back to their _solid_color index."""
  return [int(round(float(image[..., 1].mean()) / 5)) for image in images]


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
  """Good photos in several formats, convertible modes, bad files and an RGB black-and-white photo."""
  root = tmp_path_factory.mktemp("photos")
  good = {
    "a/Chelsea.JPG": _encode(_photo(0), "JPEG", quality=95),
    "a/b/astronaut.png": _encode(_photo(1), "PNG"),
    "coffee.WebP": _encode(_photo(2), "WEBP", lossless=True),
    "rocket.tif": _encode(_photo(3), "TIFF"),
    "stain.bmp": _encode(_photo(4), "BMP"),
  }
  reference = _photo(0, (32, 32))
  rgba = np.concatenate([reference, np.full((32, 32, 1), 7, np.uint8)], axis=-1)
  palette = Image.fromarray(reference).quantize(64)
  buf = io.BytesIO()
  palette.save(buf, "PNG")
  convertible = {
    "convert/rgb16.png": tf.io.encode_png(tf.constant(reference.astype(np.uint16) * 257)).numpy(),
    "convert/rgba.png": _encode(rgba, "PNG"),
    "convert/cmyk.jpg": _encode_cmyk(reference),
    "convert/palette.png": buf.getvalue(),
  }
  full_jpeg = _encode(_photo(1, (96, 96)), "JPEG", quality=90)
  bad = {
    "bad/truncated.jpg": (full_jpeg[: len(full_jpeg) * 6 // 10], "truncated or corrupt"),
    "bad/empty.jpg": (b"", "empty file"),
    "bad/text.jpg": (b"these are my holiday notes, not a photo\n" * 20, "not an image"),
    "bad/gray.png": (_encode(_photo(2)[..., 0], "PNG"), "grayscale"),
    "bad/wide.png": (_encode(np.zeros((1, 50_000, 3), np.uint8), "PNG"), "too large"),
    "bad/bomb.PNG": (_png_header_only(40_000, 40_000), "too large"),
  }
  for name, data in {**good, **convertible}.items():
    _write(root / name, data)
  for name, (data, _) in bad.items():
    _write(root / name, data)
  gray_rgb = np.repeat(_photo(3)[..., :1], 3, axis=-1)  # a black-and-white photo saved as RGB
  _write(root / "bw_photo.jpg", _encode(gray_rgb, "JPEG", quality=95))
  _write(root / "notes.txt", b"not an image extension: ignored")
  _write(root / ".hidden.jpg", b"ignored")
  return {
    "root": str(root),
    "good": sorted(good),
    "convertible": sorted(convertible),
    "bad": {name: reason for name, (_, reason) in bad.items()},
    "reference": reference,
    "decode_time_bad": "bw_photo.jpg",
  }


def _encode_cmyk(rgb: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=95)
  return buf.getvalue()


@pytest.fixture(scope="module")
def colors_folder(tmp_path_factory):
  """12 solid-color PNGs, each identifiable in any crop."""
  root = tmp_path_factory.mktemp("colors")
  for i in range(12):
    _write(root / f"c{i:02d}.png", _encode(_solid(_solid_color(i)), "PNG"))
  return str(root)


def _folder_config(path, **overrides):
  return tiny_config(**{"data.source": "folder", "data.path": path, **overrides})


def _batches(config, images, n, **kwargs):
  iterator = pipeline.create_train_dataset(config, images, **kwargs).as_numpy_iterator()
  return [next(iterator)["image"] for _ in range(n)]


@pytest.fixture(scope="module")
def step_fn():
  """The tiny config's train step, compiled once (batch 4, 32 px)."""
  config = tiny_config()
  mesh = parallel.create_mesh()
  generator, discriminator = models.create_generator(config), models.create_discriminator(config)
  with jax.set_mesh(mesh):
    step = step_lib.make_train_step(config, generator, discriminator, mesh)
    state = step_lib.init_train_state(config, generator, discriminator, mesh)

  def run(batches):
    nonlocal state
    losses = []
    with jax.set_mesh(mesh):
      for batch in batches:
        state, metrics = step(state, parallel.global_batch(mesh, {"image": batch}))
        losses.append(float(metrics.compute()["g_loss"]))
    return losses

  return run


# ----------------------------------------------------------------------------- folders
def test_folder_reports_bad_files_and_uses_convertible_ones(messy_folder, caplog):
  root = messy_folder["root"]
  with caplog.at_level(logging.INFO):
    source = sources.create_source(_folder_config(root, **{"data.eval_fraction": 0.0}))
  rel = lambda p: os.path.relpath(p, root)  # noqa: E731
  skipped = {rel(path): reason for path, reason in source.skipped}
  assert set(skipped) == set(messy_folder["bad"])
  for name, reason in messy_folder["bad"].items():
    assert skipped[name].startswith(reason), (name, skipped[name])
  # Everything else, in any extension case and subfolder, is used; hidden files and .txt are not.
  usable = messy_folder["good"] + messy_folder["convertible"] + [messy_folder["decode_time_bad"]]
  assert sorted(rel(p) for p in source.train) == sorted(usable)
  # The log names each bad file and gives the counts.
  log = caplog.text
  assert f"{len(usable) + len(skipped)} image files, {len(usable)} usable, 6 skipped" in log
  assert "2 too large" in log
  for name in messy_folder["bad"]:
    assert os.path.join(root, name) in log


def test_convertible_modes_decode_to_their_rgb(messy_folder):
  root, reference = messy_folder["root"], messy_folder["reference"]

  def decode_file(name):
    with open(os.path.join(root, name), "rb") as f:
      image, problem = decode.decode_image(
        f.read(), image_size=32, load_size=32, resize_mode="resize"
      )
    assert problem is None, (name, problem)
    return image.astype(int)

  np.testing.assert_array_equal(decode_file("convert/rgb16.png"), reference)  # 16 bits -> top 8
  np.testing.assert_array_equal(decode_file("convert/rgba.png"), reference)  # alpha dropped
  quantized = np.asarray(Image.fromarray(reference).quantize(64).convert("RGB"))
  np.testing.assert_array_equal(decode_file("convert/palette.png"), quantized)
  # CMYK JPEG (lossy, through CMYK): close to the photo it was made from, in color.
  cmyk = decode_file("convert/cmyk.jpg")
  assert np.abs(cmyk - reference).mean() < 4, np.abs(cmyk - reference).mean()
  # EXIF orientation 6 (shown turned 90 degrees clockwise): the stored left half is shown on top.
  halves = np.concatenate([_solid((255, 0, 0), (16, 32)), _solid((0, 0, 255), (16, 32))], axis=1)
  exif = Image.Exif()
  exif[0x0112] = 6
  turned, _ = decode.decode_image(
    _encode(halves, "JPEG", quality=95, exif=exif),
    image_size=32,
    load_size=32,
    resize_mode="resize",
  )
  assert turned[:12, :, 0].min() > 200 and turned[20:, :, 2].min() > 200
  # The RGB file holding a black-and-white photo passes the start-up check but is skipped decoding.
  with open(os.path.join(root, messy_folder["decode_time_bad"]), "rb") as f:
    image, problem = decode.decode_image(
      f.read(), image_size=32, load_size=32, resize_mode="resize"
    )
  assert image is None and problem.startswith("grayscale")


def test_folder_with_bad_files_trains_two_steps(messy_folder, step_fn):
  config = _folder_config(messy_folder["root"], **{"data.eval_fraction": 0.3})
  source = sources.create_source(config)
  assert len(source.skipped) == 6 and source.eval
  losses = step_fn(_batches(config, source.train, 2, rows=(0, 4)))
  assert len(losses) == 2 and np.isfinite(losses).all()
  samples = pipeline.load_eval_images(config, source.eval, 2)
  assert samples.shape == (2, 32, 32, 3)


def test_decode_time_skips_are_logged_filled_and_keep_the_stream_exact(messy_folder, caplog):
  config = _folder_config(messy_folder["root"], **{"data.eval_fraction": 0.0})
  source = sources.create_source(config)
  num_steps = 2 * len(source.train) // config.batch_size + 1  # two epochs: the bw photo is met
  with caplog.at_level(logging.INFO):
    batches = _batches(config, source.train, num_steps, rows=(0, 4))
  assert f"Skipped train image {os.path.join(messy_folder['root'], 'bw_photo.jpg')}" in caplog.text
  for batch in batches:  # its slot was filled by a color photo
    assert batch.shape == (4, 32, 32, 3)
    chroma = batch.max(-1).astype(int) - batch.min(-1)
    assert (chroma > 6).mean(axis=(1, 2)).min() > 0.01
  # Same seed, same stream; resuming anywhere continues it exactly (the filled slot included).
  again = _batches(config, source.train, 3, rows=(0, 4))
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a, b)
  for start in (1, num_steps - 3):
    resumed = _batches(config, source.train, 3, rows=(0, 4), start_step=start)
    for a, b in zip(batches[start:], resumed):
      np.testing.assert_array_equal(a, b)
  other_seed = _batches(
    tiny_config(**{"data.source": "folder", "seed": 1}), source.train, 3, rows=(0, 4)
  )
  assert not all(np.array_equal(a, b) for a, b in zip(batches, other_seed))


def test_two_hosts_split_every_epoch_without_overlap(colors_folder):
  config = _folder_config(colors_folder, **{"data.eval_fraction": 0.0, "data.random_flip": False})
  source = sources.create_source(config)
  assert len(source.train) == 12
  steps = 2 * 12 // config.batch_size  # two epochs
  hosts = [_batches(config, source.train, steps, rows=rows) for rows in ((0, 2), (2, 4))]
  one_host = _batches(config, source.train, steps, rows=(0, 4))
  for step in range(steps):  # the global batch does not depend on the number of hosts
    np.testing.assert_array_equal(np.concatenate([hosts[0][step], hosts[1][step]]), one_host[step])
  per_epoch = 12 // config.batch_size
  for epoch in range(2):
    seen = [
      sum((_index_of(b) for b in host[epoch * per_epoch : (epoch + 1) * per_epoch]), [])
      for host in hosts
    ]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(12))

  # Evaluation: each host its rows of every padded global batch; together every image once.
  source = sources.Source("colors", source.train, source.train.first(10))
  masks, found = [], []
  for rows in ((0, 2), (2, 4)):
    batches = list(pipeline.create_eval_dataset(config, source.eval, rows=rows).as_numpy_iterator())
    assert len(batches) == 3  # ceil(10 / 4) on every host
    masks.append(np.concatenate([b["mask"] for b in batches]))
    found += sum((_index_of(b["image"][b["mask"]]) for b in batches), [])
  assert masks[0].tolist() == [True] * 6  # rows 0-1 of batches 0, 1, 2: images 0 1, 4 5, 8 9
  assert masks[1].tolist() == [True] * 4 + [False] * 2  # 2 3, 6 7, padding
  assert sorted(found) == list(range(10))


def test_folder_subfolders_and_hash_split(tmp_path):
  for split, count in (("train", 5), ("val", 2)):
    for i in range(count):
      _write(tmp_path / "ds" / split / f"{i}.png", _encode(_solid(_solid_color(i)), "PNG"))
  source = sources.create_source(_folder_config(str(tmp_path / "ds")))
  assert [os.path.basename(os.path.dirname(p)) for p in source.train] == ["train"] * 5
  assert [os.path.basename(os.path.dirname(p)) for p in source.eval] == ["val"] * 2

  for i in range(40):
    _write(tmp_path / "flat" / f"sub{i % 3}" / f"{i}.png", _encode(_solid(_solid_color(i)), "PNG"))
  config = _folder_config(str(tmp_path / "flat"), **{"data.eval_fraction": 0.25})
  source = sources.create_source(config)
  assert not set(source.train) & set(source.eval) and len(source.train) + len(source.eval) == 40
  assert 3 <= len(source.eval) <= 18  # ~10 of 40
  # The split follows the relative path: adding files moves none of the others.
  _write(tmp_path / "flat" / "new.png", _encode(_solid(_solid_color(45)), "PNG"))
  grown = sources.create_source(config)
  assert set(source.eval) <= set(grown.eval) and set(source.train) <= set(grown.train)


def test_unusable_sources_fail_with_one_line(tmp_path):
  _write(tmp_path / "bad" / "a.jpg", b"")
  _write(tmp_path / "bad" / "b.png", _encode(_photo(0)[..., 0], "PNG"))
  with pytest.raises(errors.DataError) as e:
    sources.create_source(_folder_config(str(tmp_path / "bad")))
  message = str(e.value)
  assert "\n" not in message and "none of its 2 image files is usable" in message
  assert "1 empty file" in message and "1 grayscale" in message
  os.makedirs(tmp_path / "empty")
  with pytest.raises(errors.DataError, match="holds no image files"):
    sources.create_source(_folder_config(str(tmp_path / "empty")))
  with pytest.raises(errors.DataError, match="is not a directory"):
    sources.create_source(_folder_config(str(tmp_path / "missing")))
  with pytest.raises(errors.ConfigError, match="needs config.data.path"):
    configuration.validate(tiny_config(**{"data.source": "folder"}))
  with pytest.raises(errors.ConfigError, match="data.eval_fraction"):
    configuration.validate(_folder_config("x", **{"data.eval_fraction": 1.0}))


# ----------------------------------------------------------------------------- tfds
def _tfds_config(**overrides):
  return tiny_config(
    **{"data.source": "tfds", "data.tfds_name": "imagenette/320px-v2", **overrides}
  )


def test_tfds_dataset_trains_two_steps(step_fn):
  config = _tfds_config(**{"data.eval_split": "validation"})
  with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
    source = sources.create_source(config)
    assert source.train.num_examples == 10 and source.eval.num_examples == 10
    batches = _batches(config, source.train, 2, rows=(0, 4))
    evals = list(pipeline.create_eval_dataset(config, source.eval, rows=(0, 4)).as_numpy_iterator())
    samples = pipeline.load_eval_images(config, source.eval, 2)
    host_masks = [
      [
        b["mask"].tolist()
        for b in pipeline.create_eval_dataset(config, source.eval, rows=rows).as_numpy_iterator()
      ]
      for rows in ((0, 2), (2, 4))
    ]
  assert host_masks == [[[True, True]] * 3, [[True, True]] * 2 + [[False, False]]]
  for batch in batches:  # random-size mock images, all cropped to 32 px
    assert batch.shape == (4, 32, 32, 3) and batch.dtype == np.uint8 and batch.std() > 10
  assert np.isfinite(step_fn(batches)).all()
  assert [b["mask"].sum() for b in evals] == [4, 4, 2]
  np.testing.assert_array_equal(samples, evals[0]["image"][:2])

  with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(errors.DataError, match="image_key='photo' is not an image"):
      sources.create_source(_tfds_config(**{"data.image_key": "photo"}))
    with pytest.raises(errors.DataError, match="is not a TFDS dataset"):
      sources.create_source(_tfds_config(**{"data.tfds_name": "no_such_dataset_xyz"}))


_NUM_EXAMPLES = 40
_SPLITS = splits_lib.SplitDict(
  [splits_lib.SplitInfo(name="train", shard_lengths=[25, 15], num_bytes=0)]
)


def _colors_as_dataset(builder, split, decoders=None, read_config=None, **kwargs):
  """A TFDS `_as_dataset` whose example i of "train" is a PNG of _solid_color(i), honouring splits."""
  del builder, decoders, read_config, kwargs
  indices = []
  for instruction in splits_lib.AbstractSplit.from_spec(split).to_absolute(_SPLITS):
    indices += range(
      instruction.from_ or 0, _NUM_EXAMPLES if instruction.to is None else instruction.to
    )
  images = [_encode(_solid(_solid_color(i)), "PNG") for i in indices]
  return tf.data.Dataset.from_tensor_slices(
    {"image": images, "tfds_id": [f"train__{i}" for i in indices]}
  )


def test_tfds_stream_shards_hosts_reshuffles_epochs_and_resumes_exactly():
  config = _tfds_config(
    **{"data.shuffle_window": 7, "data.random_flip": False, "data.eval_split": "train[:4]"}
  )
  per_host = _NUM_EXAMPLES // 2
  steps = 2 * per_host // 2  # two epochs of a host's shard, 2 rows per host
  with tfds.testing.mock_data(
    policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_colors_as_dataset
  ):
    source = sources.create_source(config)
    assert source.train.num_examples == _NUM_EXAMPLES
    hosts = [_batches(config, source.train, steps, rows=rows) for rows in ((0, 2), (2, 4))]
    seen = [[_index_of(b) for b in host] for host in hosts]
    for host, (lo, hi) in zip(seen, ((0, per_host), (per_host, _NUM_EXAMPLES))):
      epochs = [sum(host[: steps // 2], []), sum(host[steps // 2 :], [])]
      for epoch in epochs:  # each epoch: this host's half of the split, each example once
        assert sorted(epoch) == list(range(lo, hi))
      assert epochs[0] != epochs[1]  # in a new order
    # Resuming anywhere (mid-window, mid-chunk, in the second epoch) continues the stream exactly.
    for start in (3, 8, 13):
      resumed = _batches(config, source.train, 3, rows=(2, 4), start_step=start)
      for a, b in zip(hosts[1][start:], resumed):
        np.testing.assert_array_equal(a, b)
    again = _batches(config, source.train, 3, rows=(0, 2))
    reseeded = _batches(
      _tfds_config(**{"data.shuffle_window": 7, "seed": 5}), source.train, 3, rows=(0, 2)
    )
  for a, b in zip(hosts[0], again):
    np.testing.assert_array_equal(a, b)
  assert [_index_of(b) for b in reseeded] != seen[0][:3]


def test_tfds_chunks_cover_each_host_shard_once():
  splits = splits_lib.SplitDict(
    [splits_lib.SplitInfo(name="train", shard_lengths=[60, 43], num_bytes=0)]
  )
  covered = []
  for shard in range(3):
    chunks = tfds_source.tfds_chunk_splits("train", shard=shard, num_shards=3, num_chunks=16)
    indices = []
    for chunk in chunks:
      for a in splits_lib.AbstractSplit.from_spec(chunk).to_absolute(splits):
        indices += range(a.from_ or 0, 103 if a.to is None else a.to)
    assert len(indices) == len(set(indices)) == 34  # 103 // 3, the remainder dropped
    covered += indices
  assert len(set(covered)) == len(covered) == 102


def test_a_crash_with_a_live_pipeline_exits(colors_folder):
  # Decoding runs Python in tf.data's threads: a process whose uncaught exception keeps an iterator
  # alive must still exit (it used to hang at interpreter shutdown).
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})
      from tests.conftest import tiny_config
      from colorgan.data import pipeline, sources
      def train():
        config = tiny_config(**{{"data.source": "folder", "data.path": {colors_folder!r}}})
        source = sources.create_source(config)
        iterator = pipeline.create_train_dataset(
            config, source.train, rows=(0, 4)).as_numpy_iterator()
        next(iterator)
        raise RuntimeError("the step diverged")
      train()
  """)
  result = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, check=False
  )
  assert result.returncode == 1 and "RuntimeError: the step diverged" in result.stderr
