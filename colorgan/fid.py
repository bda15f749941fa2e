"""FID and KID of two image folders (or statistics files), like pytorch-fid's command.

  python -m colorgan.fid PATH_A PATH_B --inception_weights=inception.npz [--batch_size=50] \
      [--save_stats=a_stats.npz]

Each PATH is a folder of images, read recursively (.jpg .jpeg .png .webp .bmp .tif .tiff, any case;
a file that cannot be read is named on stderr and skipped), or a statistics .npz (pytorch-fid's `mu`,
`sigma`; colorgan's add the features, for KID). The photos are read as pytorch-fid reads them
(Pillow, converted to RGB), resized to 299x299 on the host (bilinear, no antialiasing: torch's
interpolate) and embedded by pytorch-fid's FID Inception (colorgan.evaluation.inception) in batches
of --batch_size, rounded up to a multiple of the device count and split over every local device;
any device count and batch size gives the same statistics. FID is pytorch-fid's Fréchet distance,
KID torch-fidelity's (colorgan.evaluation.feature_stats). --save_stats writes PATH_A's statistics
(pytorch-fid's format plus num_images and the features).

The last line of stdout is one JSON object: {"fid", "kid", "kid_std", "num_a", "num_b",
"fid_backend"} (kid null when a side is a statistics file without features). A mistake (a missing
path, weights that are not pytorch-fid's converted Inception, a folder without two usable images) is
one line on stderr, exit status 2.
"""

import concurrent.futures
import functools
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
from PIL import Image
import tqdm

from colorgan import cli
from colorgan import errors
from colorgan import parallel
from colorgan.data import sources
from colorgan.evaluation import feature_stats
from colorgan.evaluation import inception

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "inception_weights",
  None,
  "pytorch-fid's FID Inception weights as a .npz "
  "(python -m colorgan.convert_weights inception IN.pth OUT.npz).",
)
flags.DEFINE_integer(
  "batch_size",
  50,
  "Images per batch over all devices (rounded up to a multiple of the device count).",
  lower_bound=1,
)
flags.DEFINE_string("save_stats", None, "Write PATH_A's statistics to this .npz.")
_LOADING_THREADS = 8


def load_photo(path: str) -> tuple[np.ndarray | None, str | None]:
  """(float32 [299, 299, 3] in [-1, 1], None) as pytorch-fid feeds a photo, or (None, why not)."""
  try:
    with Image.open(path) as image:
      rgb = np.asarray(image.convert("RGB"))
  except Exception as e:  # pylint: disable=broad-except  (Pillow raises many kinds)
    return None, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
  return inception.preprocess(rgb), None


def image_files(folder: str) -> list[str]:
  return [os.path.join(folder, p) for p in sources.list_image_files(folder)]


@functools.cache
def _embed_program(mesh: jax.sharding.Mesh):
  """inception.features jitted for the mesh (once per mesh: both folders share the compilation)."""
  return jax.jit(
    inception.features,
    in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
    out_shardings=parallel.replicated(mesh),
  )


def folder_stats(
  files: list[str],
  variables,
  mesh: jax.sharding.Mesh,
  batch_size: int,
  *,
  desc: str = "",
  progress: bool = True,
) -> feature_stats.FeatureStats:
  """The Inception features of `files`, accumulated; unreadable files are named on stderr.

  Args:
    files: image paths, in the order their features are accumulated.
    variables: the FID Inception's variables, replicated over the mesh.
    mesh: the devices; batches are split over its data axis.
    batch_size: the global batch (a multiple of the data axis size).
  """
  embed = _embed_program(mesh)
  stats = feature_stats.FeatureStats(inception.FEATURES)
  shape = (batch_size, inception.INPUT_SIZE, inception.INPUT_SIZE, 3)
  pending = None  # the batch on the device while the next one is read
  with concurrent.futures.ThreadPoolExecutor(_LOADING_THREADS) as pool, jax.set_mesh(mesh):
    for start in tqdm.tqdm(
      range(0, len(files), batch_size), desc=desc, unit="batch", disable=not progress, leave=False
    ):
      chunk = files[start : start + batch_size]
      images, mask = np.zeros(shape, np.float32), np.zeros(batch_size, bool)
      for i, (path, (image, problem)) in enumerate(zip(chunk, pool.map(load_photo, chunk))):
        if problem:
          print(f"colorgan: skipped {path}: {problem}", file=sys.stderr, flush=True)
          continue
        images[i], mask[i] = image, True
      features = embed(variables, parallel.global_batch(mesh, {"image": images})["image"])
      if pending is not None:
        stats.add(np.asarray(pending[0])[pending[1]])
      pending = (features, mask)
    if pending is not None:
      stats.add(np.asarray(pending[0])[pending[1]])
  return stats


def statistics_of(path: str, variables, mesh, batch_size: int) -> feature_stats.Stats:
  """A folder's statistics (computed) or a statistics file's (read).

  Raises:
    errors.StatsError: a statistics file that cannot be read.
    errors.UsageError: a folder of fewer than two usable images.
  """
  if os.path.isfile(path):
    return feature_stats.load(path)
  files = image_files(path)
  stats = folder_stats(files, variables, mesh, batch_size, desc=os.path.basename(path))
  skipped = len(files) - stats.count
  logging.info("%s: %d images%s", path, stats.count, f" ({skipped} skipped)" if skipped else "")
  if stats.count < 2:
    raise errors.UsageError(
      f"{path} holds {stats.count} usable image"
      f"{'s' * (stats.count != 1)} of {len(files)} image files: FID needs at "
      "least 2 (and is only meaningful for thousands)"
    )
  return stats.summary()


def _check_paths(paths: list[str]) -> None:
  if len(paths) != 2:
    raise errors.UsageError(
      f"expected two paths (PATH_A PATH_B), got {len(paths)}: each a folder "
      "of images or a statistics .npz"
    )
  for path in paths:
    if not os.path.exists(path):
      raise errors.UsageError(f"{path}: no such folder or file")
    if os.path.isfile(path) and not path.endswith(".npz"):
      raise errors.UsageError(
        f"{path} is a file but not a statistics .npz: give a folder of images or a .npz"
      )
  if FLAGS.save_stats and not os.path.isdir(paths[0]):
    raise errors.UsageError(
      f"--save_stats writes the statistics of PATH_A's images, but {paths[0]} is not a folder"
    )


@cli.exit_on_error
def main(argv: list[str]) -> None:
  cli.keep_only_colorgan_info()  # JAX's INFO lines (backends it did not find, ...) are noise here
  paths = argv[1:]
  _check_paths(paths)
  if not FLAGS.inception_weights:
    raise errors.UsageError(
      "--inception_weights is required: pytorch-fid's Inception converted with `python -m "
      "colorgan.convert_weights inception pt_inception-2015-12-05-6726825d.pth inception.npz` "
      "(README: Metrics)"
    )
  try:
    host_variables = inception.load_variables(FLAGS.inception_weights)
  except errors.WeightsError as e:
    raise errors.WeightsError(f"--inception_weights: {e}") from None

  mesh = parallel.create_mesh()
  devices = mesh.shape[parallel.DATA_AXIS]
  batch_size = -(-FLAGS.batch_size // devices) * devices
  variables = jax.tree.map(lambda x: parallel.replicate(mesh, x), host_variables)
  stats_a = statistics_of(paths[0], variables, mesh, batch_size)
  if FLAGS.save_stats:
    feature_stats.save(FLAGS.save_stats, stats_a)
    logging.info("Wrote the statistics of %s to %s", paths[0], FLAGS.save_stats)
  stats_b = statistics_of(paths[1], variables, mesh, batch_size)

  try:
    fid = feature_stats.fid(stats_a, stats_b)
  except ValueError as e:  # statistics of different sizes
    raise errors.StatsError(str(e)) from None
  kid = kid_std = None
  if stats_a.features is not None and stats_b.features is not None:
    kid, kid_std = feature_stats.kid(stats_a.features, stats_b.features)
  else:
    logging.warning(
      "KID needs the features of both sets: a statistics file without them (as "
      "pytorch-fid writes) gives kid null"
    )
  print(
    json.dumps(
      {
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "num_a": stats_a.num_images,
        "num_b": stats_b.num_images,
        "fid_backend": inception.BACKEND,
      }
    )
  )


@cli.exit_on_error
def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return FLAGS(argv)
  except flags.Error as e:
    raise errors.UsageError(f"{' '.join(str(e).split())} (see --helpfull)") from None


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
