"""FID and KID against pytorch-fid and torch-fidelity; the scoring and conversion commands; devices.

pytorch-fid's network is built with random weights and calibrated BatchNorm statistics, saved as its
.pth, converted by `colorgan.convert_weights`, and compared with pytorch-fid's own InceptionV3 (its
resize and scaling included) on real photos of different sizes. Nothing is downloaded.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest
import torch

from colorgan import convert_weights
from colorgan import errors
from colorgan.evaluation import feature_stats
from colorgan import fid
from colorgan.evaluation import inception
from colorgan import parallel
from colorgan.data import sources
from tests import torch_reference
from tests.conftest import run_module
from tests.conftest import REPO


# Photos of different sizes, each resized by the pipeline from its own size (as pytorch-fid does).
SIZES = ((512, 512), (451, 300), (190, 240), (120, 96), (640, 427))


def _cli(module: str, *args, devices: int = 1) -> subprocess.CompletedProcess:
  return run_module(module, *args, devices=devices, timeout=600)


def _write_photos(folder, indices) -> list[str]:
  """Bundled photos at SIZES (JPEG and PNG), one in a subfolder: the command reads recursively."""
  photos = sources.bundled_photo_paths()
  paths = []
  for n, i in enumerate(indices):
    image = Image.open(photos[i]).convert("RGB").resize(SIZES[n % len(SIZES)], Image.BILINEAR)
    sub = os.path.join(folder, "nested") if n == 1 else str(folder)
    os.makedirs(sub, exist_ok=True)
    path = os.path.join(sub, f"photo{n}.{'png' if n % 2 else 'jpg'}")
    image.save(path)
    paths.append(path)
  return sorted(paths, key=lambda p: os.path.relpath(p, folder).replace(os.sep, "/"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Random pytorch-fid weights (.pth and converted .npz) and two folders of photos."""
  root = tmp_path_factory.mktemp("fid")
  a = _write_photos(root / "a", (0, 1, 2, 3))
  b = _write_photos(root / "b", (4, 5, 6, 7))
  with open(root / "b" / "broken.jpg", "wb") as f:
    f.write(b"\xff\xd8 not a jpeg")
  calibration = np.stack(
    [inception.preprocess(np.asarray(Image.open(p).convert("RGB"))) for p in a + b]
  ).transpose(0, 3, 1, 2)
  pth, npz = str(root / "pt_inception.pth"), str(root / "inception.npz")
  torch_reference.save_random_fid_inception(pth, seed=0, calibration=calibration)
  convert_weights.main(["convert_weights", "inception", pth, npz])
  return dict(root=root, a=a, b=b, pth=pth, npz=npz)


@pytest.fixture(scope="module")
def reference(setup):
  """pytorch-fid's own pipeline: its image dataset, InceptionV3, activations and statistics."""
  torch_reference.pytorch_fid_inception()
  from pytorch_fid import fid_score  # pylint: disable=g-import-not-at-top

  model = torch_reference.pytorch_fid_model(setup["pth"])
  torch.set_num_threads(2)
  out = {}
  for name in ("a", "b"):
    # Batches of 1: pytorch-fid batches images of one size only.
    act = fid_score.get_activations(setup[name], model, batch_size=1, dims=2048, num_workers=0)
    out[name] = (act, np.mean(act, axis=0), np.cov(act, rowvar=False))
  return out


def test_pool_features_match_pytorch_fid(setup, reference):
  variables = inception.load_variables(setup["npz"])
  mesh = parallel.create_mesh()
  stats = fid.folder_stats(
    setup["a"],
    jax.tree.map(lambda x: parallel.replicate(mesh, x), variables),
    mesh,
    2,
    progress=False,
  )
  ours, theirs = stats.features, reference["a"][0]
  assert ours.shape == theirs.shape == (4, 2048)
  assert np.mean(theirs > 0) > 0.9 and 0.05 < np.std(theirs)  # non-degenerate features
  error = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
  print(f"pool features: max |ours - pytorch-fid| / max |pytorch-fid| = {error:.2e}")
  assert error < 1e-4


def test_resize_is_torch_interpolate_without_antialiasing():
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  for shape in ((37, 53), (299, 299), (600, 401), (120, 96)):
    image = rng.uniform(0, 1, shape + (3,)).astype(np.float32)
    # Contiguous [1, 3, H, W], as ToTensor makes it (torch resizes channels-last input otherwise).
    theirs = (
      F.interpolate(
        torch.as_tensor(image).permute(2, 0, 1).contiguous()[None],
        size=(299, 299),
        mode="bilinear",
        align_corners=False,
      )[0]
      .permute(1, 2, 0)
      .numpy()
    )
    np.testing.assert_allclose(inception.resize_bilinear(image), theirs, atol=1e-6)
    np.testing.assert_allclose(
      np.asarray(jax.jit(inception.resize_bilinear)(image)), theirs, atol=1e-6
    )


def test_command_fid_and_kid_match_pytorch_fid_and_torch_fidelity(setup, reference, tmp_path):
  stats_path = str(tmp_path / "a_stats.npz")
  result = _cli(
    "colorgan.fid",
    str(setup["root"] / "a"),
    str(setup["root"] / "b"),
    f"--inception_weights={setup['npz']}",
    "--batch_size=3",
    f"--save_stats={stats_path}",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  printed = json.loads(result.stdout.strip().splitlines()[-1])
  assert f"skipped {setup['root'] / 'b' / 'broken.jpg'}" in result.stderr
  assert printed["num_a"] == 4 and printed["num_b"] == 4
  assert printed["fid_backend"] == "pytorch-fid-inception-2015-12-05"

  (act_a, mu_a, sigma_a), (act_b, mu_b, sigma_b) = reference["a"], reference["b"]
  # pytorch-fid's distance of its own activations, through the low-rank identity that
  # test_fid_of_fewer_images_than_features_is_pytorch_fids_from_the_features checks against
  # calculate_frechet_distance (whose sqrtm of a 2048 x 2048 product takes ~15 s here).
  theirs = feature_stats.fid(
    feature_stats.Stats(mu_a, sigma_a, len(act_a), act_a),
    feature_stats.Stats(mu_b, sigma_b, len(act_b), act_b),
  )
  print(f"FID {printed['fid']:.6f}, pytorch-fid {theirs:.6f}")
  np.testing.assert_allclose(printed["fid"], theirs, rtol=1e-4)

  # KID: torch-fidelity on pytorch-fid's activations (subsets of all 4 images: it needs n >= size).
  from torch_fidelity import metric_kid  # pylint: disable=g-import-not-at-top

  kid = metric_kid.kid_features_to_metric(
    torch.as_tensor(reference["a"][0]), torch.as_tensor(act_b), kid_subset_size=4, verbose=False
  )
  print(f"KID {printed['kid']:.8f}, torch-fidelity {kid['kernel_inception_distance_mean']:.8f}")
  np.testing.assert_allclose(printed["kid"], kid["kernel_inception_distance_mean"], rtol=1e-4)

  saved = feature_stats.load(stats_path)  # pytorch-fid's keys, readable as pytorch-fid reads them
  with np.load(stats_path) as npz:  # to 1e-4 of their scale: the features agree to ~1e-5
    np.testing.assert_allclose(npz["mu"], mu_a, rtol=0, atol=1e-4 * np.abs(mu_a).max())
    np.testing.assert_allclose(npz["sigma"], sigma_a, rtol=0, atol=1e-4 * np.abs(sigma_a).max())
  assert saved.num_images == 4 and saved.features.shape == (4, 2048)


def test_kid_is_torch_fidelitys_with_its_subsets():
  from torch_fidelity import metric_kid  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(1)
  f1 = rng.gamma(2.0, 0.3, (40, 64))
  f2 = rng.gamma(2.0, 0.35, (30, 64))
  ours = feature_stats.kid(f1, f2, subsets=7, subset_size=12)
  theirs = metric_kid.kid_features_to_metric(
    torch.as_tensor(f1), torch.as_tensor(f2), kid_subsets=7, kid_subset_size=12, verbose=False
  )
  np.testing.assert_allclose(
    ours,
    (theirs["kernel_inception_distance_mean"], theirs["kernel_inception_distance_std"]),
    rtol=1e-10,
  )


def test_frechet_distance_is_pytorch_fids_including_its_fallback(capsys):
  from pytorch_fid import fid_score  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(2)
  for n in (200, 10):  # full rank; then singular (n < d), where the eps fallback may kick in
    a, b = rng.normal(0, 1, (n, 32)), rng.normal(0.2, 1.3, (n, 32))
    args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    np.testing.assert_allclose(
      feature_stats.frechet_distance(*args), fid_score.calculate_frechet_distance(*args), rtol=1e-9
    )
  # The fallback itself: a product with no finite square root.
  zeros = np.zeros((2, 2))
  singular = np.array([[0.0, 1.0], [0.0, 0.0]])
  args = (np.zeros(2), singular, np.ones(2), np.eye(2))
  with np.errstate(all="ignore"):
    np.testing.assert_allclose(
      feature_stats.frechet_distance(*args), fid_score.calculate_frechet_distance(*args), rtol=1e-9
    )
  assert "singular product; adding 1e-06" in capsys.readouterr().out  # pytorch-fid fell back too
  assert feature_stats.frechet_distance(np.zeros(2), zeros, np.zeros(2), zeros) == 0.0


def test_fid_of_fewer_images_than_features_is_pytorch_fids_from_the_features():
  """feature_stats.fid below d images: the trace from the features' cross product, equal to
  pytorch-fid's sqrtm of the (singular) covariance product; and sqrtm where features are missing."""
  from pytorch_fid import fid_score  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(3)
  for n1, n2 in ((5, 9), (40, 40)):  # fewer images than the 256 features
    a = np.maximum(rng.normal(0.3, 0.5, (n1, 256)), 0)
    b = np.maximum(rng.normal(0.4, 0.6, (n2, 256)), 0)
    sa, sb = (feature_stats.FeatureStats(256) for _ in range(2))
    sa.add(a)
    sb.add(b)
    theirs = fid_score.calculate_frechet_distance(
      a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )
    np.testing.assert_allclose(feature_stats.fid(sa.summary(), sb.summary()), theirs, rtol=1e-6)
    no_features = dataclasses.replace(sb.summary(), features=None)
    np.testing.assert_allclose(feature_stats.fid(sa.summary(), no_features), theirs, rtol=1e-9)


def test_streaming_statistics_do_not_depend_on_batching():
  rng = np.random.default_rng(3)
  x = rng.normal(3.0, 2.0, (23, 16)).astype(np.float32)
  for cuts in ((23,), (1, 22), (5, 5, 5, 5, 3), (0, 7, 16)):
    stats = feature_stats.FeatureStats(16)
    start = 0
    for n in cuts:
      stats.add(x[start : start + n])
      start += n
    np.testing.assert_allclose(stats.mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10)
    np.testing.assert_array_equal(stats.features, x)


def test_statistics_files_in_pytorch_fids_format(tmp_path):
  rng = np.random.default_rng(4)
  mu, sigma = rng.normal(size=8), np.cov(rng.normal(size=(20, 8)), rowvar=False)
  theirs = str(tmp_path / "theirs.npz")
  np.savez_compressed(theirs, mu=mu, sigma=sigma)  # what pytorch-fid's --save-stats writes
  loaded = feature_stats.load(theirs)
  np.testing.assert_array_equal(loaded.sigma, sigma)
  assert loaded.num_images is None and loaded.features is None  # KID cannot use it: kid null
  ours = str(tmp_path / "ours.npz")
  features = rng.normal(size=(5, 8)).astype(np.float32)
  feature_stats.save(ours, feature_stats.Stats(mu, sigma, 5, features))
  with np.load(ours) as npz:  # as pytorch-fid's compute_statistics_of_path reads it
    np.testing.assert_array_equal(npz["mu"][:], mu)
    np.testing.assert_array_equal(npz["sigma"][:], sigma)
  np.testing.assert_array_equal(feature_stats.load(ours).features, features)
  np.savez(str(tmp_path / "bad.npz"), mu=mu, sigma=sigma[:4])
  with pytest.raises(errors.StatsError, match="needs arrays mu .d. and sigma .d, d."):
    feature_stats.load(str(tmp_path / "bad.npz"))


_DEVICES_PROGRAM = """
import sys, jax, numpy as np
from colorgan import fid, parallel
from colorgan.evaluation import inception
files, npz, out = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
mesh = parallel.create_mesh()
assert mesh.shape["data"] == 8, mesh.shape
variables = jax.tree.map(lambda x: parallel.replicate(mesh, x), inception.load_variables(npz))
stats = fid.folder_stats(files, variables, mesh, 8, progress=False)  # 5 photos: 3 padding rows
np.savez(out, mu=stats.mu, sigma=stats.sigma, features=stats.features)
"""


def test_same_statistics_on_1_and_8_devices_and_any_batch_size(setup, tmp_path):
  files = setup["a"] + setup["b"][:1]  # 5 photos
  out = str(tmp_path / "eight.npz")
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="8", TF_CPP_MIN_LOG_LEVEL="2")
  eight = subprocess.Popen(
    [sys.executable, "-c", _DEVICES_PROGRAM, ",".join(files), setup["npz"], out],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  mesh = parallel.create_mesh()
  variables = jax.tree.map(
    lambda x: parallel.replicate(mesh, x), inception.load_variables(setup["npz"])
  )
  ones = [fid.folder_stats(files, variables, mesh, batch, progress=False) for batch in (2, 3)]
  output, _ = eight.communicate(timeout=600)
  assert eight.returncode == 0, output[-3000:]
  with np.load(out) as npz:
    runs = [(s.mu, s.sigma, s.features) for s in ones] + [
      (npz["mu"], npz["sigma"], npz["features"])
    ]
  # Equal up to float32 rounding: XLA:CPU's convolutions add in an order that depends on the batch
  # shape (a few 1e-5 of the features' scale); the float64 accumulation adds nothing to that.
  mu0, sigma0, features0 = runs[0]
  assert features0.shape == (5, 2048)
  for mu, sigma, features in runs[1:]:
    np.testing.assert_allclose(features, features0, rtol=0, atol=1e-4 * np.abs(features0).max())
    np.testing.assert_allclose(mu, mu0, rtol=0, atol=1e-4 * np.abs(mu0).max())
    np.testing.assert_allclose(sigma, sigma0, rtol=0, atol=1e-4 * np.abs(sigma0).max())


def test_command_mistakes_are_one_line_errors(setup, tmp_path, capsys):
  not_weights = str(tmp_path / "other.npz")
  np.savez(not_weights, mu=np.zeros(3), sigma=np.eye(3))
  empty = tmp_path / "empty"
  empty.mkdir()
  a = str(setup["root"] / "a")
  cases = [
    (
      (a, str(tmp_path / "missing"), f"--inception_weights={setup['npz']}"),
      "missing: no such folder or file",
    ),
    ((a,), "expected two paths"),
    ((a, a), "--inception_weights is required"),
    ((a, a, f"--inception_weights={not_weights}"), "does not hold the FID Inception weights"),
    ((str(empty), a, f"--inception_weights={setup['npz']}"), "holds 0 usable images"),
    (
      (not_weights, a, f"--inception_weights={setup['npz']}", "--save_stats=x.npz"),
      "is not a folder",
    ),
    ((a, a, "--batch_size=0"), "--batch_size"),
  ]
  # In this process, as the command runs them (its flags parsed, then main), flags reset after each.
  for args, message in cases:
    try:
      with pytest.raises(SystemExit) as exit_info:
        fid.main(fid._parse_flags(["fid", *args]))  # pylint: disable=protected-access
    finally:
      fid.FLAGS.unparse_flags()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("colorgan: error:")]
    assert exit_info.value.code == 2 and len(lines) == 1 and message in lines[0], (args, err)
    assert "Traceback" not in err


def test_convert_weights_mistakes_are_one_line_errors(setup, tmp_path, capsys, monkeypatch):
  lpips_file = str(tmp_path / "alex_like.pth")
  torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, lpips_file)
  text = str(tmp_path / "notes.pth")
  with open(text, "w") as f:
    f.write("not a torch file")
  out = str(tmp_path / "out.npz")

  def error(*args) -> str:
    with pytest.raises(SystemExit) as exit_info:
      convert_weights.main(["convert_weights", *args])
    assert exit_info.value.code == 2 and not os.path.exists(out)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]

  assert "is not pytorch-fid's FID Inception weights: no weights" in error(
    "inception", lpips_file, out
  )
  assert "is not a PyTorch weights file" in error("inception", text, out)
  assert "is not torchvision's AlexNet weights" in error("lpips", setup["pth"], lpips_file, out)
  assert "none.pth: no such file" in error("inception", str(tmp_path / "none.pth"), out)
  assert error("inception", out).startswith("usage:")
  monkeypatch.setitem(sys.modules, "torch", None)  # no PyTorch: one line naming what to install
  assert "pip install 'colorgan[convert]'" in error("inception", setup["pth"], out)
