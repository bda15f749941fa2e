"""colorgan.color against skimage.color on real photos, and its gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color
import skimage.io
import skimage.transform

from colorgan import color
from colorgan.data import sources


@pytest.fixture(scope="module")
def photos():
  """The bundled photos, downscaled 4x (float64 RGB in [0, 1])."""
  images = []
  for path in sources.bundled_photo_paths():
    image = skimage.io.imread(path)[..., :3]
    images.append(skimage.transform.rescale(image, 0.25, channel_axis=-1, anti_aliasing=True))
  return images


def test_rgb_to_lab_matches_skimage(photos):
  for rgb in photos:
    expected = skimage.color.rgb2lab(rgb)
    got = np.asarray(jax.jit(color.rgb_to_lab)(rgb))
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)


def test_lab_to_rgb_matches_skimage(photos):
  for rgb in photos:
    lab = skimage.color.rgb2lab(rgb)
    np.testing.assert_allclose(
      np.asarray(jax.jit(color.lab_to_rgb)(lab)), skimage.color.lab2rgb(lab), atol=1e-3, rtol=0
    )


def test_lab_to_rgb_matches_skimage_out_of_gamut():
  # Random Lab values, many outside the sRGB gamut (clipped) and some with negative z.
  rng = np.random.default_rng(0)
  lab = np.stack(
    [rng.uniform(0, 100, 5000), rng.uniform(-128, 127, 5000), rng.uniform(-128, 127, 5000)], axis=-1
  )
  with np.errstate(all="ignore"):
    import warnings  # pylint: disable=g-import-not-at-top

    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # skimage warns about the negative z it clips
      expected = skimage.color.lab2rgb(lab)
  np.testing.assert_allclose(np.asarray(color.lab_to_rgb(lab)), expected, atol=1e-3, rtol=0)


def test_round_trip_and_model_scaling():
  rgb = jax.random.uniform(jax.random.key(0), (64, 3))
  np.testing.assert_allclose(color.lab_to_rgb(color.rgb_to_lab(rgb)), rgb, atol=1e-4)
  lab = color.rgb_to_lab(rgb)
  l, ab = color.scale_l(lab[..., :1]), color.scale_ab(lab[..., 1:])
  assert float(l.min()) >= -1 and float(l.max()) <= 1
  np.testing.assert_allclose(color.scale_l(jnp.array([0.0, 50.0, 100.0])), [-1, 0, 1])
  np.testing.assert_allclose(color.scale_ab(jnp.array([-110.0, 55.0])), [-1, 0.5])
  np.testing.assert_allclose(color.unscale_l(l), lab[..., :1], atol=1e-4)
  np.testing.assert_allclose(color.unscale_ab(ab), lab[..., 1:], atol=1e-4)


def test_uint8_model_lab_matches_skimage():
  rgb = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  l, ab = color.rgb_uint8_to_model_lab(rgb)
  lab = skimage.color.rgb2lab(rgb)
  np.testing.assert_allclose(l[..., 0], lab[..., 0] / 50 - 1, atol=2e-5)
  np.testing.assert_allclose(ab, lab[..., 1:] / 110, atol=2e-5)
  np.testing.assert_allclose(color.model_lab_to_rgb(l, ab), rgb / 255.0, atol=1e-4)


def test_gradients_are_finite_everywhere():
  # Black, white, both piecewise thresholds and ordinary colors: cbrt and x**(1/2.4) have infinite
  # slope at 0, which must not leak through the unused branch.
  rgb = jnp.array(
    [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.04045, 0.5, 0.0], [0.2, 0.4, 0.9], [1e-6, 0.0, 1e-3]]
  )
  grad_fwd = jax.jacobian(lambda x: color.rgb_to_lab(x).sum())(rgb)
  assert np.all(np.isfinite(grad_fwd))
  lab = jnp.array(
    [[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [8.0, 0.0, 0.0], [50.0, 120.0, -120.0], [0.0, 50.0, 150.0]]
  )
  grad_inv = jax.jacobian(lambda x: color.lab_to_rgb(x).sum())(lab)
  assert np.all(np.isfinite(grad_inv))
  # A gradient that exists is right: compare with central differences at an interior color.
  x = jnp.array([0.3, 0.5, 0.7])
  analytic = jax.jacobian(color.rgb_to_lab)(x)
  eps = 1e-3
  numeric = np.stack(
    [
      (color.rgb_to_lab(x + eps * e) - color.rgb_to_lab(x - eps * e)) / (2 * eps)
      for e in np.eye(3, dtype=np.float32)
    ],
    axis=-1,
  )
  np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=2e-2)


def test_device_and_host_paths_share_constants_and_match_skimage(photos):
  """color.py with jax (training) and numpy (photo.py: full-resolution photos) against skimage."""
  from colorgan.inference import photo  # pylint: disable=g-import-not-at-top

  for rgb in photos[:3]:
    lab = skimage.color.rgb2lab(rgb)
    np.testing.assert_allclose(np.asarray(color.rgb_to_lab(rgb))[..., 0], lab[..., 0], atol=1e-3)
    np.testing.assert_allclose(photo.lightness(rgb), lab[..., 0], atol=1e-3)
    # In gamut (a real photo's own Lab), the host composition is the plain conversion, like the
    # device's lab_to_rgb, up to uint8 rounding.
    host = photo.compose(lab[..., 0], lab[..., 1:])
    np.testing.assert_allclose(host / 255.0, skimage.color.lab2rgb(lab), atol=0.5 / 255 + 1e-3)
    device = np.asarray(color.lab_to_rgb(lab))
    np.testing.assert_allclose(device, skimage.color.lab2rgb(lab), atol=1e-3)
  # One definition: the constants are numpy (no JAX backend at import) and invert each other.
  assert isinstance(color.XYZ_FROM_RGB, np.ndarray) and isinstance(color.D65_WHITE, np.ndarray)
  np.testing.assert_allclose(color.RGB_FROM_XYZ @ color.XYZ_FROM_RGB, np.eye(3), atol=1e-6)
  np.testing.assert_allclose(color.XYZ_FROM_RGB, skimage.color.colorconv.xyz_from_rgb, atol=1e-7)
