"""The Inception network of FID, as pytorch-fid computes it: 2048-d pool features of RGB photos.

`FIDInceptionV3` is pytorch-fid's `InceptionV3([3])` (the port of TensorFlow's 2015-12-05 graph that
every published FID uses) in Flax: torchvision's Inception v3 layout with pytorch-fid's FIDInceptionA,
C, E_1 and E_2 blocks and their pooling quirks (TensorFlow's average pooling leaves the zero padding
out of the mean; the last block max-pools where the paper average-pools), up to the final global
average pool. Its weights come from pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, converted
once to a .npz by `python -m colorgan.convert_weights inception` (nothing is downloaded).

Preprocessing is pytorch-fid's: RGB in [0, 1] (uint8 / 255), resized from the photo's own size to
299x299 bilinearly without antialiasing (torch's `F.interpolate(..., align_corners=False)`), then
scaled to [-1, 1]. `resize_bilinear` is that resize, for numpy (a photo on the host) and jax arrays
(a batch on the device) alike.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from colorgan import fileio

INPUT_SIZE = 299
FEATURES = 2048
BACKEND = "pytorch-fid-inception-2015-12-05"  # named in every report that carries an FID
_BN_EPSILON = 1e-3  # torchvision's BasicConv2d


# ----------------------------------------------------------------------------- preprocessing
def _linear_taps(
  in_size: int, out_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(i0, i1, w0, w1): output j = w0[j] * in[i0[j]] + w1[j] * in[i1[j]] along one axis.

  torch's bilinear source index with align_corners=False: (j + 0.5) * scale - 0.5 with the float32
  scale in / out, clamped at 0; the right neighbour is clamped at the last pixel. torch's CPU build
  evaluates that index as one fused multiply-add (rounded to float32 once): float64 is exact there.
  """
  scale = np.float64(np.float32(in_size / out_size))
  source = (scale * (np.arange(out_size) + 0.5) - 0.5).astype(np.float32)
  source = np.maximum(source, np.float32(0))
  i0 = source.astype(np.int64)  # floor: source >= 0
  w1 = np.clip(source - i0.astype(np.float32), 0, 1).astype(np.float32)
  return i0, np.minimum(i0 + 1, in_size - 1), (np.float32(1) - w1), w1


def resize_bilinear(images, size: int = INPUT_SIZE):
  """torch.nn.functional.interpolate(mode="bilinear", align_corners=False), no antialiasing.

  Args:
    images: float [..., H, W, C], numpy or jax.
    size: the output height and width.

  Returns:
    [..., size, size, C] of the same kind; along W first, then H, as torch's CPU kernel adds.
  """
  height, width = images.shape[-3], images.shape[-2]
  i0, i1, w0, w1 = _linear_taps(width, size)
  rows = images[..., i0, :] * w0[:, None] + images[..., i1, :] * w1[:, None]
  i0, i1, w0, w1 = _linear_taps(height, size)
  return (rows[..., i0, :, :] * w0[:, None, None]) + (rows[..., i1, :, :] * w1[:, None, None])


def preprocess(images_uint8):
  """uint8 RGB [..., H, W, 3] -> float32 [..., 299, 299, 3] in [-1, 1], as pytorch-fid feeds it.

  numpy in, numpy out (a photo of any size, on the host); jax in, jax out (inside jit).
  """
  xp = jnp if isinstance(images_uint8, jax.Array) else np
  x = xp.asarray(images_uint8).astype(xp.float32) / xp.float32(255)
  return 2 * resize_bilinear(x) - 1


# ----------------------------------------------------------------------------- the network
class BasicConv(nn.Module):
  """torchvision's BasicConv2d in inference: conv (no bias), BatchNorm (eps 1e-3), ReLU.

  Variables: params {kernel [kh, kw, C, F], scale [F], bias [F]}, batch_stats {mean [F], var [F]}.
  The BatchNorm is folded into the conv's kernel and a bias: one pass over the output instead of two.
  """

  features: int
  kernel_size: tuple[int, int] = (1, 1)
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    f = self.features
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], f))
    scale = self.param("scale", nn.initializers.ones, (f,))
    bias = self.param("bias", nn.initializers.zeros, (f,))
    mean = self.variable("batch_stats", "mean", jnp.zeros, (f,)).value
    var = self.variable("batch_stats", "var", jnp.ones, (f,)).value
    factor = scale * jax.lax.rsqrt(var + _BN_EPSILON)
    (ph, pw), s = self.padding, self.strides
    y = jax.lax.conv_general_dilated(
      x, kernel * factor, (s, s), ((ph, ph), (pw, pw)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return nn.relu(y + (bias - mean * factor))


def _avg_pool_3x3(x):
  """3x3, stride 1, padding 1, the padding left out of the mean (TensorFlow's; pytorch-fid's patch)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x, strides: int):
  padding = ((1, 1), (1, 1)) if strides == 1 else "VALID"
  return nn.max_pool(x, (3, 3), strides=(strides, strides), padding=padding)


class InceptionA(nn.Module):
  """FIDInceptionA: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool (padding excluded)-1x1."""

  pool_features: int

  @nn.compact
  def __call__(self, x):
    branch1x1 = BasicConv(64, name="branch1x1")(x)
    branch5x5 = BasicConv(48, name="branch5x5_1")(x)
    branch5x5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(branch5x5)
    dbl = BasicConv(64, name="branch3x3dbl_1")(x)
    dbl = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(dbl)
    dbl = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(dbl)
    pool = BasicConv(self.pool_features, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch5x5, dbl, pool], axis=-1)


class InceptionB(nn.Module):
  """torchvision's InceptionB (Mixed_6a): the 35 -> 17 reduction."""

  @nn.compact
  def __call__(self, x):
    branch3x3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
    dbl = BasicConv(64, name="branch3x3dbl_1")(x)
    dbl = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(dbl)
    dbl = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(dbl)
    return jnp.concatenate([branch3x3, dbl, _max_pool_3x3(x, 2)], axis=-1)


class InceptionC(nn.Module):
  """FIDInceptionC: factorized 7x7 convs, average pool with the padding excluded."""

  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    branch1x1 = BasicConv(192, name="branch1x1")(x)
    b7 = BasicConv(c7, name="branch7x7_1")(x)
    b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    dbl = BasicConv(c7, name="branch7x7dbl_1")(x)
    dbl = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(dbl)
    dbl = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(dbl)
    dbl = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(dbl)
    dbl = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(dbl)
    pool = BasicConv(192, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, b7, dbl, pool], axis=-1)


class InceptionD(nn.Module):
  """torchvision's InceptionD (Mixed_7a): the 17 -> 8 reduction."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, name="branch3x3_1")(x)
    b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """FIDInceptionE_1 (average pool, padding excluded) or, max_pool=True, FIDInceptionE_2 (the
  TensorFlow graph's max pool in the last block)."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    branch1x1 = BasicConv(320, name="branch1x1")(x)
    b3 = BasicConv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate(
      [
        BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
      ],
      -1,
    )
    dbl = BasicConv(448, name="branch3x3dbl_1")(x)
    dbl = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(dbl)
    dbl = jnp.concatenate(
      [
        BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(dbl),
        BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(dbl),
      ],
      -1,
    )
    pool = _max_pool_3x3(x, 1) if self.max_pool else _avg_pool_3x3(x)
    pool = BasicConv(192, name="branch_pool")(pool)
    return jnp.concatenate([branch1x1, b3, dbl, pool], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's InceptionV3([3]) after its resize and scaling: [B, 299, 299, 3] in [-1, 1] ->
  [B, 2048] pool features. Submodule names are the .pth's (Conv2d_1a_3x3, Mixed_5b, ...)."""

  @nn.compact
  def __call__(self, x):
    x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3(x, 2)
    x = BasicConv(80, name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3(x, 2)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


# ----------------------------------------------------------------------------- weights
def abstract_variables() -> dict[str, Any]:
  """The network's variables as shape structs: {"params": ..., "batch_stats": ...}."""
  shape = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), shape)


def load_variables(path: str) -> dict[str, Any]:
  """The variables in a .npz written by `convert_weights inception` (numpy float32 arrays).

  Raises:
    errors.WeightsError: not a readable .npz of this network's arrays (one line).
  """
  return fileio.read_variables(path, abstract_variables(), what="FID Inception")


def from_torch(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """pytorch-fid's state_dict (numpy arrays) -> the .npz arrays ("params/Mixed_5b/branch1x1/kernel").

  Each BasicConv2d `X` maps X.conv.weight [F, C, kh, kw] -> params/X/kernel [kh, kw, C, F],
  X.bn.weight/bias -> params/X/scale/bias, X.bn.running_mean/var -> batch_stats/X/mean/var. The
  classifier (fc) and the BatchNorm step counters are not part of the feature network.
  """
  suffixes = {
    "conv.weight": ("params", "kernel"),
    "bn.weight": ("params", "scale"),
    "bn.bias": ("params", "bias"),
    "bn.running_mean": ("batch_stats", "mean"),
    "bn.running_var": ("batch_stats", "var"),
  }
  arrays = {}
  for key, value in state_dict.items():
    suffix = next((s for s in suffixes if key.endswith("." + s)), None)
    if suffix is None:
      continue
    module = key[: -len(suffix) - 1]
    collection, leaf = suffixes[suffix]
    if leaf == "kernel":
      value = np.transpose(value, (2, 3, 1, 0))
    arrays[f"{collection}/{module.replace('.', '/')}/{leaf}"] = np.asarray(value, np.float32)
  return arrays


# ----------------------------------------------------------------------------- features
def features(variables: dict[str, Any], images) -> jax.Array:
  """Pool features of preprocessed images: float [B, 299, 299, 3] in [-1, 1] -> float32 [B, 2048]."""
  return FIDInceptionV3().apply(variables, images)


def features_of_uint8(variables: dict[str, Any], images_uint8: jax.Array) -> jax.Array:
  """uint8 RGB [B, H, W, 3] (one size) -> [B, 2048]: pytorch-fid's resize and scaling, then the net."""
  return features(variables, preprocess(images_uint8))
