"""LPIPS (v0.1, AlexNet) in Flax, as the `lpips` package computes it: a learned perceptual distance.

`lpips.LPIPS(net="alex", version="0.1")(x0, x1)`, step by step: both images in [-1, 1] go through its
scaling layer ((x - shift) / scale), through torchvision's AlexNet features, tapped after each of its
five ReLUs; each tap is normalized to unit length over channels, the squared difference of the two
images' taps is weighted by the learned 1x1 head of that layer (no bias), averaged over the
positions, and the five layers are summed: one distance per image pair (0: identical).

Weights: torchvision's AlexNet (`alexnet-owt-7be5be79.pth`) and the lpips package's
`weights/v0.1/alex.pth`, converted to one .npz by `python -m colorgan.convert_weights lpips`.
"""

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from colorgan import fileio

# The lpips package's ScalingLayer (v0.1): ImageNet's mean and std in [-1, 1] units.
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
# torchvision's AlexNet `features` layers: (index, features, kernel, stride, padding), and after
# which of them LPIPS taps the ReLU output (relu1 .. relu5).
_CONVS = (
  (0, 64, 11, 4, 2),
  (3, 192, 5, 1, 2),
  (6, 384, 3, 1, 1),
  (8, 256, 3, 1, 1),
  (10, 256, 3, 1, 1),
)
_POOL_BEFORE = (3, 6)  # MaxPool2d(3, stride 2) comes before features.3 and features.6
CHANNELS = tuple(c[1] for c in _CONVS)
_NORM_EPSILON = 1e-10  # lpips.normalize_tensor


class AlexNetTaps(nn.Module):
  """torchvision's AlexNet features up to relu5: [B, H, W, 3] -> the five ReLU outputs."""

  @nn.compact
  def __call__(self, x):
    taps = []
    for index, features, kernel, stride, pad in _CONVS:
      if index in _POOL_BEFORE:
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
      x = nn.relu(
        nn.Conv(
          features,
          (kernel, kernel),
          strides=(stride, stride),
          padding=((pad, pad), (pad, pad)),
          name=f"features_{index}",
        )(x)
      )
      taps.append(x)
    return taps


def _unit_channels(x):
  """lpips.normalize_tensor: x / (||x|| over channels + 1e-10)."""
  return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + _NORM_EPSILON)


class LPIPS(nn.Module):
  """(x0, x1) RGB in [-1, 1], [B, H, W, 3] each -> the LPIPS distance of each pair, [B]."""

  @nn.compact
  def __call__(self, x0, x1):
    batch = x0.shape[0]
    x = (jnp.concatenate([x0, x1]) - SHIFT) / SCALE
    total = 0.0
    for k, tap in enumerate(AlexNetTaps(name="net")(x)):
      diff = jnp.square(_unit_channels(tap[:batch]) - _unit_channels(tap[batch:]))
      weighted = nn.Conv(1, (1, 1), use_bias=False, name=f"lin{k}")(diff)
      total = total + jnp.mean(weighted, axis=(1, 2, 3))
    return total


def abstract_variables(size: int = 64) -> dict[str, Any]:
  """The variables as shape structs ({"params": {"net": ..., "lin0": ..., ...}})."""
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(LPIPS().init, jax.random.key(0), x, x)


def load_variables(path: str) -> dict[str, Any]:
  """The variables in a .npz written by `convert_weights lpips` (numpy float32 arrays).

  Raises:
    errors.WeightsError: not a readable .npz of these arrays (one line).
  """
  return fileio.read_variables(path, abstract_variables(), what="LPIPS AlexNet")


def distance_of_uint8(variables: dict[str, Any], a_uint8: jax.Array, b_uint8: jax.Array):
  """uint8 RGB [B, H, W, 3] pairs -> LPIPS [B] (the images scaled to [-1, 1] as lpips expects)."""
  scale = lambda x: x.astype(jnp.float32) / 127.5 - 1.0  # noqa: E731  (2 * x / 255 - 1)
  return LPIPS().apply(variables, scale(a_uint8), scale(b_uint8))


def _kernel(weight: np.ndarray) -> np.ndarray:
  """A torch conv weight [F, C, kh, kw] -> flax's [kh, kw, C, F]."""
  return np.transpose(weight, (2, 3, 1, 0)).astype(np.float32)


def alexnet_from_torch(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """torchvision's AlexNet state_dict -> "params/net/features_<i>/{kernel,bias}" (classifier left)."""
  arrays = {}
  for key, value in state_dict.items():
    match = re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)
    if match:
      leaf = "kernel" if match.group(2) == "weight" else "bias"
      arrays[f"params/net/features_{match.group(1)}/{leaf}"] = (
        _kernel(value) if leaf == "kernel" else np.asarray(value, np.float32)
      )
  return arrays


def heads_from_torch(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """lpips's weights/v0.1/alex.pth -> flax names.

  "lin<k>.model.<i>.weight" [1, C, 1, 1] -> "params/lin<k>/kernel".
  """
  arrays = {}
  for key, value in state_dict.items():
    match = re.fullmatch(r"lin(\d)\.model\.\d\.weight", key)
    if match:
      arrays[f"params/lin{match.group(1)}/kernel"] = _kernel(value)
  return arrays
