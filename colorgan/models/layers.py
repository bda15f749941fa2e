"""Building blocks shared by the generators and the discriminator, with pix2pix's initialization."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

# pix2pix's init_weights('normal', 0.02): conv weights N(0, 0.02), BatchNorm scale N(1, 0.02).
conv_init = nn.initializers.normal(stddev=0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


# PyTorch's BatchNorm momentum 0.1 updates running = 0.9 * running + 0.1 * batch: Flax's momentum=0.9.
# epsilon 1e-5 as in PyTorch. Statistics and scale/bias stay float32 under bf16 compute.
BatchNorm = functools.partial(
  nn.BatchNorm, momentum=0.9, epsilon=1e-5, scale_init=bn_scale_init, param_dtype=jnp.float32
)


def down_conv(
  features: int,
  *,
  strides: int = 2,
  use_bias: bool,
  dtype,
  fast: bool = False,
  name: str | None = None,
):
  """4x4 conv with PyTorch padding 1: halves the size at stride 2 (and shrinks by 1 at stride 1).

  fast: the MatmulConv formulation (same parameters and outputs); otherwise flax's nn.Conv.
  """
  if fast:
    return MatmulConv(
      features, kernel_size=4, strides=strides, pad=1, use_bias=use_bias, dtype=dtype, name=name
    )
  return nn.Conv(
    features,
    (4, 4),
    strides=(strides, strides),
    padding=((1, 1), (1, 1)),
    use_bias=use_bias,
    kernel_init=conv_init,
    dtype=dtype,
    name=name,
  )


def up_conv(features: int, *, use_bias: bool, dtype, fast: bool = False, name: str | None = None):
  """4x4 stride-2 transposed conv, PyTorch padding 1: doubles the size exactly.

  lax.conv_transpose pads the stride-dilated input; k - 1 - p = 2 on each side matches PyTorch's
  ConvTranspose2d(kernel 4, stride 2, padding 1). fast: the MatmulConvTranspose formulation.
  """
  if fast:
    return MatmulConvTranspose(features, use_bias=use_bias, dtype=dtype, name=name)
  return nn.ConvTranspose(
    features,
    (4, 4),
    strides=(2, 2),
    padding=((2, 2), (2, 2)),
    use_bias=use_bias,
    kernel_init=conv_init,
    dtype=dtype,
    name=name,
  )


# ---- The fast path (config.model.fast_layers): the same layers written as matrix products.
#
# XLA:CPU runs convolutions through Eigen's spatial-convolution kernels, and the weight-gradient
# convolution autodiff makes of a transposed conv at a few GFLOP/s. A dot_general on [pixels, C]
# matrices runs at the machine's GEMM speed, and its gradients are dot_generals too. So:
#   * conv: im2col (the patches gathered as one fused copy), then one matmul; or, where that copy
#     is the larger cost, the product of every input block with every tap first and the shifted
#     sums on the (smaller) output side;
#   * transposed conv: one matmul of the input with all 16 taps, then col2im: the four shifted
#     groups of tap planes add up, and one transpose interleaves the output's rows and columns.
# Parameters (names, shapes, layout, init) are those of nn.Conv / nn.ConvTranspose,
# so checkpoints move freely between the two paths.


def _patches(x, taps: int, stride: int, out_h: int, out_w: int):
  """im2col: [B, H, W, C] (padded) -> [B * out_h * out_w, taps * taps * C], (ky, kx, C) order.

  Strided slices, one per tap, cost XLA:CPU a copy each before the concatenation; reshaping the rows
  (then the columns) into blocks of `stride` turns every tap into a contiguous slice of blocks, and
  the whole im2col into one fused copy.
  """
  batch, channels = x.shape[0], x.shape[-1]
  n = taps // stride  # blocks each tap window spans, per axis
  x = x[:, : stride * (out_h + n - 1), : stride * (out_w + n - 1)].reshape(
    batch, out_h + n - 1, stride, out_w + n - 1, stride, channels
  )
  x = jnp.stack([x[:, a : a + out_h] for a in range(n)], axis=2)  # [B, oh, a, p, bw, q, C]
  x = jnp.stack(
    [x[:, :, :, :, b : b + out_w] for b in range(n)], axis=5
  )  # [B, oh, a, p, ow, b, q, C]
  # ky = a * stride + p, kx = b * stride + q.
  return x.transpose(0, 1, 4, 2, 3, 5, 6, 7).reshape(batch * out_h * out_w, -1)


# Weighs a float copied against FLOPs computed, for choosing between the two conv formulations: about
# what a 2-core AVX2 machine does in the time it moves one float through a copy (measured, layer
# by layer).
_FLOPS_PER_COPIED_FLOAT = 300


def _output_side_is_cheaper(
  channels: int, features: int, kernel_size: int, stride: int, out_h: int, out_w: int
) -> bool:
  """Whether _conv_output_side beats im2col for this layer, by the floats each copies (per image).

  im2col copies k*k*C floats per output pixel. The output side copies n*n*F per block of the input
  (n = k / stride taps per axis) and computes the products on a border of n - 1 extra blocks.
  Its wins: the first down layers past the stem (large images, few channels) and the 1-feature
  PatchGAN logits; im2col stays for the stem (1 or 3 channels) and the deep layers.
  """
  n = kernel_size // stride
  blocks = (out_h + n - 1) * (out_w + n - 1)
  block_channels = stride * stride * channels
  extra_flops = 2 * (blocks - out_h * out_w) * block_channels * n * n * features
  output_side = blocks * n * n * features + extra_flops / _FLOPS_PER_COPIED_FLOAT
  return output_side < out_h * out_w * kernel_size * kernel_size * channels


def _conv_output_side(x, kernel, stride: int, out_h: int, out_w: int):
  """The conv (x padded, kernel [k, k, C, F]) with the products first and the shifts on the output.

  Cut the input into stride x stride blocks: output (i, j) reads the n x n blocks from (i, j) on
  (n = k / stride), so y[i, j] = sum over (a, b) of block[i + a, j + b] . W_ab, where W_ab holds
  taps (stride * a + p, stride * b + q). One product of every block with every W_ab, then the
  n * n shifted slices add up: no k*k-times copy of the input (im2col), only of the product.
  """
  batch, channels = x.shape[0], x.shape[-1]
  k, features = kernel.shape[0], kernel.shape[-1]
  n = k // stride
  rows, cols = out_h + n - 1, out_w + n - 1
  blocks = x[:, : stride * rows, : stride * cols].reshape(
    batch, rows, stride, cols, stride, channels
  )
  blocks = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(batch * rows * cols, -1)  # (p, q, C)
  w = kernel.reshape(n, stride, n, stride, channels, features).transpose(1, 3, 4, 0, 2, 5)
  z = jnp.dot(blocks, w.reshape(stride * stride * channels, n * n * features))
  z = z.reshape(batch, rows, cols, n, n, features)
  return sum(z[:, a : a + out_h, b : b + out_w, a, b] for a in range(n) for b in range(n))


class MatmulConv(nn.Module):
  """nn.Conv(features, (k, k), strides, padding=((pad, pad), (pad, pad))) as matrix products.

  Two formulations: im2col + one matmul, or _conv_output_side; output_side=None picks the one
  that copies less for the layer's shape (True/False force one, for tests and benchmarks).
  """

  features: int
  kernel_size: int = 4
  strides: int = 2
  pad: int = 1
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  output_side: bool | None = None

  @nn.compact
  def __call__(self, x):
    k, s, p = self.kernel_size, self.strides, self.pad
    if k % s:
      raise ValueError(f"MatmulConv needs kernel_size divisible by strides, got {k} and {s}")
    batch, height, width, channels = x.shape
    kernel = self.param("kernel", conv_init, (k, k, channels, self.features), jnp.float32)
    kernel = kernel.astype(self.dtype)
    out_h, out_w = (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1
    x = jnp.pad(x.astype(self.dtype), ((0, 0), (p, p), (p, p), (0, 0)))
    output_side = self.output_side
    if output_side is None:
      output_side = _output_side_is_cheaper(channels, self.features, k, s, out_h, out_w)
    if output_side:
      y = _conv_output_side(x, kernel, s, out_h, out_w)
    else:
      y = jnp.dot(_patches(x, k, s, out_h, out_w), kernel.reshape(-1, self.features))
      y = y.reshape(batch, out_h, out_w, self.features)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class MatmulConvTranspose(nn.Module):
  """nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2))): doubles H and W.

  A transposed conv is the transpose of the stride-2 conv (padding 1) with the flipped kernel W: every
  input pixel x[m] adds x[m] . W[k] to output 2m + k - 1 (per axis). So: one product gives each
  pixel's 16 tap contributions, and col2im (the transpose of _patches) adds them in place.
  """

  features: int
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    batch, height, width, channels = x.shape
    f = self.features
    kernel = self.param("kernel", conv_init, (4, 4, channels, f), jnp.float32)
    # Flax's kernel K, flipped, is the conv's: W[k] = K[3 - k]. (On a 1-pixel axis taps 0 and 3 only
    # write into the padding that col2im crops: computed all the same, to keep one code path.)
    x = x.astype(self.dtype).reshape(-1, channels)
    kernel = kernel.astype(self.dtype)
    if 2 * x.shape[0] <= f:
      # Few pixels (the inner layers, and small batches): one product per tap, batched. It reads the
      # kernel in place, and copying x 16 times costs less than the transposed copy of the kernel
      # that the single product below needs (which dominates the layer at batch 1).
      z = jnp.einsum(
        "tnc,tcf->tnf", jnp.broadcast_to(x, (16,) + x.shape), kernel.reshape(16, channels, f)
      )
      z = z.reshape(4, 4, batch, height, width, f).transpose(2, 3, 4, 0, 1, 5)
      z = z[:, :, :, ::-1, ::-1]
    elif x.shape[0] > channels:
      # Many pixels: flip the kernel within its transposed copy. Flipping the product instead fuses
      # into col2im, but in the backward pass it costs a reversed copy of the product's gradient.
      z = jnp.dot(x, kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(channels, 16 * f))
      z = z.reshape(batch, height, width, 4, 4, f)
    else:
      z = jnp.dot(x, kernel.transpose(2, 0, 1, 3).reshape(channels, 16 * f))
      # The flip on the product, where it fuses into col2im (a reversed copy of a kernel is slow).
      z = z.reshape(batch, height, width, 4, 4, f)[:, :, :, ::-1, ::-1]
    y = _col2im(z)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (f,), jnp.float32).astype(self.dtype)
    return y


def _col2im(z):
  """[B, H, W, 4, 4, F] tap contributions -> [B, 2H, 2W, F]: tap (ky, kx) of pixel (m, n) adds to
  output (2m + ky - 1, 2n + kx - 1).

  With ky = 2a + p the padded output row is 2(m + a) + p: block m + a, row p in it. So the four
  (a, b) groups add at block offsets, and one transpose interleaves the rows within the blocks.
  """
  batch, height, width, _, _, f = z.shape
  z = z.reshape(batch, height, width, 2, 2, 2, 2, f)  # [B, H, W, a, p, b, q, F]
  blocks = sum(
    jnp.pad(z[:, :, :, a, :, b], ((0, 0), (a, 1 - a), (b, 1 - b), (0, 0), (0, 0), (0, 0)))
    for a in (0, 1)
    for b in (0, 1)
  )  # [B, H + 1, W + 1, p, q, F]
  y = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height + 2, 2 * width + 2, f)
  return y[:, 1:-1, 1:-1]
