"""LPIPS (AlexNet, v0.1) against the lpips package on real photos, and its weights conversion.

The reference is `lpips.LPIPS(net="alex", pnet_rand=True)`: a random AlexNet trunk and the real
learned heads that ship inside the package; the trunk is saved in torchvision's AlexNet format and
converted with the heads by `python -m colorgan.convert_weights lpips`.
"""

import jax
import numpy as np
from PIL import Image
import pytest
import torch

from colorgan import convert_weights
from colorgan import errors
from colorgan.data import sources
from colorgan.evaluation import lpips
from tests import torch_reference


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("lpips")
  torch.manual_seed(0)
  reference = torch_reference.lpips_reference()
  alexnet, heads, npz = str(root / "alexnet.pth"), str(root / "alex.pth"), str(root / "lpips.npz")
  torch_reference.save_lpips_pths(reference, alexnet, heads)
  convert_weights.main(["convert_weights", "lpips", alexnet, heads, npz])
  return reference, lpips.load_variables(npz)


def _photos(size) -> np.ndarray:
  """The 8 bundled photos as uint8 [8, size, size, 3] (center crops, resized)."""
  photos = []
  for path in sources.bundled_photo_paths():
    image = Image.open(path).convert("RGB")
    side = min(image.size)
    left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
    photos.append(
      np.asarray(
        image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
      )
    )
  return np.stack(photos)


@pytest.mark.parametrize("size", [64, 100])
def test_lpips_matches_the_lpips_package_on_real_photos(models, size):
  reference, variables = models
  photos = _photos(size)
  # Each photo against another photo, and against a degraded copy of itself (a colorizer's case).
  degraded = (
    np.round(photos.astype(np.float32) * [0.9, 1.0, 0.8] + 10).clip(0, 255).astype(np.uint8)
  )
  a = np.concatenate([photos, photos])
  b = np.concatenate([photos[::-1], degraded])
  ours = np.asarray(jax.jit(lpips.distance_of_uint8)(variables, a, b))
  with torch.no_grad():
    theirs = (
      reference(torch_reference.torch_images(a), torch_reference.torch_images(b), normalize=True)
      .numpy()
      .reshape(-1)
    )
  print(
    f"LPIPS at {size} px: max |ours - lpips| = {np.max(np.abs(ours - theirs)):.2e} "
    f"(values {theirs.min():.3f} .. {theirs.max():.3f})"
  )
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
  assert np.all(theirs > 1e-3)  # not trivially zero
  assert np.all(ours[8:] < ours[:8])  # a degraded copy is closer than another photo
  np.testing.assert_allclose(jax.jit(lpips.distance_of_uint8)(variables, a, a), 0, atol=1e-7)


def test_converted_heads_are_the_packages_real_weights(models, tmp_path):
  reference, variables = models
  for k in range(5):
    head = reference.lins[k].model[-1].weight.detach().numpy()  # [1, C, 1, 1]
    np.testing.assert_array_equal(
      variables["params"][f"lin{k}"]["kernel"][0, 0, :, 0], head[0, :, 0, 0]
    )
    assert head.min() >= 0 and head.max() > 0  # learned (nonnegative), not random
  # A file of another network is one line naming the missing array.
  wrong = str(tmp_path / "wrong.npz")
  np.savez(wrong, **{"params/net/features_0/kernel": np.zeros((11, 11, 3, 64), np.float32)})
  with pytest.raises(errors.WeightsError, match="lacks 'params/lin0/kernel'"):
    lpips.load_variables(wrong)
