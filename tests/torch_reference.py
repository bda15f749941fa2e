"""The PyTorch references (pytorch-fid, lpips, torch-fidelity) built offline, with random weights.

Nothing is downloaded: pytorch-fid's network is built with random weights and non-trivial BatchNorm
statistics and saved as a .pth in pytorch-fid's own format (the state_dict of its
`fid_inception_v3()`); its `InceptionV3([3])` then loads that file where it would load the released
one. LPIPS's trunk is random (`pnet_rand=True`) and its linear heads are the real ones that ship
inside the lpips package. torchvision's compiled operators do not load beside the CPU torch build
installed here; its Python model definitions do once its operator registrations are stubbed.
"""

import contextlib
import os
import sys
import types
from unittest import mock

import numpy as np


def import_torchvision():
  """torchvision's model definitions without its compiled operators (see the module docstring)."""
  sys.modules.setdefault(
    "torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations")
  )
  import torchvision  # pylint: disable=g-import-not-at-top

  return torchvision


# Before anything imports pytorch-fid, lpips or torch-fidelity (each imports torchvision), whichever
# test runs first.
import_torchvision()


def pytorch_fid_inception():
  import_torchvision()
  from pytorch_fid import inception  # pylint: disable=g-import-not-at-top

  return inception


def save_random_fid_inception(path: str, *, seed: int = 0, calibration=None) -> None:
  """pytorch-fid's FID Inception with random weights, saved as its .pth is (a state_dict).

  BatchNorm: random scale and bias; running statistics from a pass over `calibration` (float
  [N, 3, 299, 299] in [-1, 1]) in training mode, so the activations stay in a realistic range,
  then perturbed so that no layer is the identity. Without calibration: random statistics.
  """
  import torch  # pylint: disable=g-import-not-at-top

  inception = pytorch_fid_inception()
  torch.manual_seed(seed)
  # Random init: nothing fetched, nothing loaded.
  with (
    mock.patch.object(inception, "load_state_dict_from_url", lambda *args, **kwargs: {}),
    mock.patch.object(torch.nn.Module, "load_state_dict", lambda *args, **kwargs: None),
  ):
    net = inception.fid_inception_v3()
  bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for bn in bns:
      bn.weight.uniform_(0.5, 1.5)
      bn.bias.normal_(0.0, 0.2)
      bn.running_mean.normal_(0.0, 0.1)
      bn.running_var.uniform_(0.5, 2.0)
    if calibration is not None:
      for bn in bns:
        bn.momentum = None  # a cumulative average over the calibration pass
        bn.reset_running_stats()
      net.train()
      _run_layers(net, torch.as_tensor(calibration, dtype=torch.float32))
      net.eval()
      for bn in bns:
        bn.running_mean.add_(torch.randn_like(bn.running_mean) * 0.05)
        bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
  torch.save(net.state_dict(), path)


_LAYERS = (
  "Conv2d_1a_3x3",
  "Conv2d_2a_3x3",
  "Conv2d_2b_3x3",
  "maxpool1",
  "Conv2d_3b_1x1",
  "Conv2d_4a_3x3",
  "maxpool2",
  "Mixed_5b",
  "Mixed_5c",
  "Mixed_5d",
  "Mixed_6a",
  "Mixed_6b",
  "Mixed_6c",
  "Mixed_6d",
  "Mixed_6e",
  "Mixed_7a",
  "Mixed_7b",
  "Mixed_7c",
)


def _run_layers(net, x):
  """The layers pytorch-fid's InceptionV3 runs, in its order (up to the final pool)."""
  for name in _LAYERS:
    x = getattr(net, name)(x)
  return x


@contextlib.contextmanager
def pth_served_as_release(path: str):
  """pytorch-fid loads `path` where it would download pt_inception-2015-12-05-6726825d.pth."""
  import torch  # pylint: disable=g-import-not-at-top

  inception = pytorch_fid_inception()
  load = lambda *args, **kwargs: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
  with mock.patch.object(inception, "load_state_dict_from_url", load):
    yield


def pytorch_fid_model(path: str):
  """pytorch-fid's own InceptionV3([3]) (its resize and scaling included) with the .pth at path."""
  inception = pytorch_fid_inception()
  with pth_served_as_release(path):
    return inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()


def lpips_reference():
  """lpips.LPIPS(net="alex", pnet_rand=True): random AlexNet, the package's real v0.1 heads."""
  import_torchvision()
  import lpips  # pylint: disable=g-import-not-at-top

  return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()


def save_lpips_pths(model, alexnet_path: str, lin_path: str) -> None:
  """The reference's trunk as torchvision's AlexNet state_dict, and the package's own head file."""
  import torch  # pylint: disable=g-import-not-at-top
  import lpips  # pylint: disable=g-import-not-at-top

  trunk = {}
  for key, value in model.net.state_dict().items():  # "slice1.0.weight": features.0.weight
    _, index, leaf = key.split(".")
    trunk[f"features.{index}.{leaf}"] = value
  torch.save(trunk, alexnet_path)
  package_heads = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "alex.pth")
  with open(package_heads, "rb") as src, open(lin_path, "wb") as dst:
    dst.write(src.read())


def torch_images(images_uint8):
  """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1], contiguous, as torchvision's ToTensor
  makes them (torch's resize takes another path for channels-last memory)."""
  import torch  # pylint: disable=g-import-not-at-top

  return torch.as_tensor(np.asarray(images_uint8)).permute(0, 3, 1, 2).contiguous().float().div(255)
