"""A U-Net whose encoder is a ResNet-18 or -34 taking L: the tutorial's "strategy 2", without fastai.

The encoder is torchvision's ResNet (7x7 stem, max-pool, four stages of basic blocks; no classifier)
with a one-channel input, so its parameters map one to one onto torchvision's: with width 64 the
encoder has 11,170,240 parameters for ResNet-18 and 21,278,400 for ResNet-34 (torchvision's
11,689,512 and 21,797,672 without the 1000-way fc layer and with 1 instead of 3 input channels).

The decoder climbs back from 1/32 of the input size to full size, as fastai's DynamicUnet does, in five
blocks: bilinear 2x upsampling, a 3x3 conv, concatenation with the encoder's feature map of that size
(the stem's at 1/2, and the input L itself at full size), then two 3x3 convs. A 1x1 conv gives ab,
bounded to (-ab_bound, ab_bound) by a scaled tanh.

Pretrained encoder weights can be brought in as a `.npz` (see `encoder_from_torchvision` for
torchvision's names) or an orbax checkpoint: `config.model.init_from`, read by colorgan/warm_start.py.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from colorgan import hints as hints_lib

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

# torchvision's ResNet init: kaiming normal (fan_out) convs, BatchNorm scale 1 and bias 0. The decoder
# uses fan_in kaiming as fastai does.
_encoder_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_decoder_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# PyTorch's BatchNorm(momentum=0.1, eps=1e-5) as Flax sees it; statistics and scale stay float32.
_BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5, param_dtype=jnp.float32)


def _conv(
  features: int,
  kernel: int,
  *,
  strides: int = 1,
  init=_encoder_init,
  use_bias=False,
  dtype,
  name: str,
):
  """A conv with PyTorch's symmetric padding kernel // 2 (torchvision pads 7x7 by 3, 3x3 by 1)."""
  pad = kernel // 2
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(strides, strides),
    padding=((pad, pad), (pad, pad)),
    use_bias=use_bias,
    kernel_init=init,
    dtype=dtype,
    name=name,
  )


class BasicBlock(nn.Module):
  """torchvision's BasicBlock: two 3x3 convs and a shortcut (1x1 conv + BN where the shape changes)."""

  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    bn = functools.partial(_BatchNorm, use_running_average=not train, dtype=self.dtype)
    y = _conv(self.features, 3, strides=self.strides, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(bn(name="bn1")(y))
    y = _conv(self.features, 3, dtype=self.dtype, name="conv2")(y)
    y = bn(name="bn2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = _conv(self.features, 1, strides=self.strides, dtype=self.dtype, name="downsample_conv")(x)
      x = bn(name="downsample_bn")(x)
    return nn.relu(y + x)


class ResNetEncoder(nn.Module):
  """ResNet-18/34 without its classifier. l: [B, H, W, C] (L, or L and hints) -> the five feature
  maps a U-Net taps.

  Returns [stem (H/2, w), layer1 (H/4, w), layer2 (H/8, 2w), layer3 (H/16, 4w), layer4 (H/32, 8w)].
  """

  stage_sizes: Sequence[int] = STAGE_SIZES[18]
  width: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, l, *, train: bool):
    x = _conv(self.width, 7, strides=2, dtype=self.dtype, name="stem_conv")(l.astype(self.dtype))
    x = nn.relu(_BatchNorm(use_running_average=not train, dtype=self.dtype, name="stem_bn")(x))
    features = [x]
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(
          self.width * 2**stage, strides=strides, dtype=self.dtype, name=f"layer{stage + 1}_{block}"
        )(x, train=train)
      features.append(x)
    return features


class UpBlock(nn.Module):
  """2x bilinear upsampling, a 3x3 conv, concatenation with the skip, two 3x3 convs (+BN, ReLU)."""

  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, skip, *, train: bool):
    def conv_bn_relu(y, name):
      y = _conv(self.features, 3, init=_decoder_init, dtype=self.dtype, name=f"{name}_conv")(y)
      y = _BatchNorm(use_running_average=not train, dtype=self.dtype, name=f"{name}_bn")(y)
      return nn.relu(y)

    b, h, w, c = x.shape
    x = jax.image.resize(x, (b, 2 * h, 2 * w, c), method="bilinear")
    x = conv_bn_relu(x, "up")
    x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
    return conv_bn_relu(conv_bn_relu(x, "merge1"), "merge2")


class ResNetUNet(nn.Module):
  """ResNet encoder + U-Net decoder: L -> ab.

  Attributes:
    depth: 18 or 34.
    width: the ResNet's base width (64 for torchvision's weights); the decoder's widths follow it.
    ab_bound: the output is ab_bound * tanh(.): 1 spans the model's whole ab range ([-110, 110] in
      Lab units); smaller values keep predictions inside a tighter gamut.
    dtype: activation dtype; parameters and the output stay float32.
  """

  depth: int = 18
  width: int = 64
  ab_bound: float = 1.0
  out_channels: int = 2
  dtype: jnp.dtype = jnp.float32
  use_hints: bool = False

  @nn.compact
  def __call__(self, l, hints=None, *, train: bool):
    """Args: l: [B, H, W, 1] in [-1, 1], H and W multiples of 32; hints: [B, H, W, 3] (use_hints
    only; None: no hint). Returns: ab [B, H, W, 2], float32.

    With use_hints, L and the hint map go together into the stem (4 input channels) and into the
    last, full-size skip, where a hint reaches the output at its own pixels.
    """
    if l.shape[1] % 32 or l.shape[2] % 32:
      raise ValueError(f"ResNetUNet needs sides that are multiples of 32, got {l.shape[1:3]}")
    x_in = hints_lib.generator_input(l, hints, self.use_hints)
    skips = ResNetEncoder(STAGE_SIZES[self.depth], self.width, dtype=self.dtype, name="encoder")(
      x_in, train=train
    )
    x = skips.pop()
    w = self.width
    # 1/32 -> 1/16, 1/8, 1/4 (skips of 4w, 2w, w channels), 1/2 (the stem's w), 1/1 (the input).
    for i, (skip, features) in enumerate(
      zip([*reversed(skips), x_in], [4 * w, 2 * w, w, w, max(w // 2, 1)])
    ):
      x = UpBlock(features, dtype=self.dtype, name=f"up{i}")(x, skip, train=train)
    x = nn.Conv(self.out_channels, (1, 1), dtype=self.dtype, name="to_ab")(x)
    return self.ab_bound * jnp.tanh(x.astype(jnp.float32))


# ----------------------------------------------------------------------------- pretrained weights
def encoder_from_torchvision(state_dict: dict[str, np.ndarray]) -> dict[str, dict]:
  """torchvision ResNet-18/34 weights (as numpy arrays) -> this encoder's {"params", "batch_stats"}.

  To use ImageNet weights you have locally (nothing here downloads them):

    sd = torchvision.models.resnet18(weights=...).state_dict()
    np.savez("resnet18.npz", **{k: v.numpy() for k, v in sd.items()})
    # then --config.model.init_from=resnet18.npz

  Conv weights [O, I, kH, kW] become kernels [kH, kW, I, O]; an RGB stem is summed over its input
  channels for the one-channel L input (what fastai's create_body(n_in=1) does); BatchNorm weight /
  bias / running_mean / running_var become scale / bias / mean / var. fc.* and num_batches_tracked
  are dropped.
  """
  params, stats = {}, {}

  def put(tree, path, value):
    for part in path[:-1]:
      tree = tree.setdefault(part, {})
    tree[path[-1]] = np.asarray(value, np.float32)

  for key, value in state_dict.items():
    parts = key.split(".")
    if parts[0] == "fc" or parts[-1] == "num_batches_tracked":
      continue
    if parts[0] in ("conv1", "bn1"):
      module = ["stem_conv" if parts[0] == "conv1" else "stem_bn"]
    elif parts[0].startswith("layer") and len(parts) >= 4:
      block = f"{parts[0]}_{parts[1]}"
      if parts[2] == "downsample":
        module = [block, "downsample_conv" if parts[3] == "0" else "downsample_bn"]
      else:
        module = [block, parts[2]]
    else:
      raise ValueError(f"{key!r} is not a torchvision ResNet weight name")
    leaf = parts[-1]
    if module[-1].endswith("conv") or module[-1].startswith("conv"):
      kernel = np.transpose(np.asarray(value), (2, 3, 1, 0))
      if module == ["stem_conv"] and kernel.shape[2] != 1:
        kernel = kernel.sum(axis=2, keepdims=True)
      put(params, module + ["kernel"], kernel)
    elif leaf in ("weight", "bias"):
      put(params, module + ["scale" if leaf == "weight" else "bias"], value)
    elif leaf in ("running_mean", "running_var"):
      put(stats, module + ["mean" if leaf == "running_mean" else "var"], value)
    else:
      raise ValueError(f"{key!r} is not a torchvision ResNet weight name")
  return {"params": params, "batch_stats": stats}
