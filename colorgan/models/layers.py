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
    nn.BatchNorm, momentum=0.9, epsilon=1e-5, scale_init=bn_scale_init, param_dtype=jnp.float32)


def down_conv(features: int, *, strides: int = 2, use_bias: bool, dtype, fast: bool = False,
              name: str | None = None):
  """4x4 conv with PyTorch padding 1: halves the size at stride 2 (and shrinks by 1 at stride 1).

  fast: the MatmulConv formulation (same parameters and outputs); otherwise flax's nn.Conv.
  """
  if fast:
    return MatmulConv(features, kernel_size=4, strides=strides, pad=1, use_bias=use_bias,
                      dtype=dtype, name=name)
  return nn.Conv(features, (4, 4), strides=(strides, strides), padding=((1, 1), (1, 1)),
                 use_bias=use_bias, kernel_init=conv_init, dtype=dtype, name=name)


def up_conv(features: int, *, use_bias: bool, dtype, fast: bool = False, inference: bool = False,
            name: str | None = None):
  """4x4 stride-2 transposed conv, PyTorch padding 1: doubles the size exactly.

  lax.conv_transpose pads the stride-dilated input; k - 1 - p = 2 on each side matches PyTorch's
  ConvTranspose2d(kernel 4, stride 2, padding 1). fast: the MatmulConvTranspose formulation;
  inference: it is not differentiated (a hint for the fast path).
  """
  if fast:
    return MatmulConvTranspose(features, use_bias=use_bias, dtype=dtype, inference=inference,
                               name=name)
  return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                          use_bias=use_bias, kernel_init=conv_init, dtype=dtype, name=name)


# ---- The fast path (config.model.fast_layers): the same layers written as matrix products.
#
# XLA:CPU runs convolutions through Eigen's spatial-convolution kernels, and the weight-gradient
# convolution autodiff makes of a transposed conv at a few GFLOP/s. A dot_general on [pixels, C]
# matrices runs at the machine's GEMM speed, and its gradients are dot_generals too. So:
#   * conv: im2col (one strided slice per kernel tap, concatenated on channels), then one matmul;
#   * transposed conv: one matmul of the input with all 16 taps (col2im), then each output phase
#     (row, column parity) sums its four shifted tap planes, and the phases interleave.
# Kernel taps that only ever meet zero padding (the innermost 1x1 and 2x2 layers) are skipped: they
# add exact zeros. Parameters (names, shapes, layout, init) are those of nn.Conv / nn.ConvTranspose,
# so checkpoints move freely between the two paths.


def _live_taps(in_size: int, out_size: int, kernel: int, stride: int, pad: int) -> list[int]:
  """Kernel taps (along one axis) that meet at least one real input for some output position."""
  return [k for k in range(kernel)
          if any(0 <= stride * o + k - pad < in_size for o in range(out_size))]


class MatmulConv(nn.Module):
  """nn.Conv(features, (k, k), strides, padding=((pad, pad), (pad, pad))) as im2col + one matmul."""
  features: int
  kernel_size: int = 4
  strides: int = 2
  pad: int = 1
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, s, p = self.kernel_size, self.strides, self.pad
    batch, height, width, channels = x.shape
    kernel = self.param("kernel", conv_init, (k, k, channels, self.features), jnp.float32)
    out_h, out_w = (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1
    rows, cols = _live_taps(height, out_h, k, s, p), _live_taps(width, out_w, k, s, p)
    x = jnp.pad(x.astype(self.dtype), ((0, 0), (p, p), (p, p), (0, 0)))
    patches = jnp.concatenate(
        [x[:, i:i + s * (out_h - 1) + 1:s, j:j + s * (out_w - 1) + 1:s, :]
         for i in rows for j in cols], axis=-1)  # [B, out_h, out_w, taps * C], (tap, C) order
    kernel = kernel[min(rows):max(rows) + 1, min(cols):max(cols) + 1]  # live taps are contiguous
    y = jnp.dot(patches.reshape(-1, patches.shape[-1]),
                kernel.reshape(-1, self.features).astype(self.dtype))
    y = y.reshape(batch, out_h, out_w, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
    return y


# Below this many input pixels (batch x height x width) a transposed conv multiplies tap by tap.
PER_TAP_BELOW_ROWS = 1024


class MatmulConvTranspose(nn.Module):
  """nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2))): doubles H and W.

  With Flax's (unflipped) kernel K, along one axis y[2m] = x[m-1] K[0] + x[m] K[2] and
  y[2m+1] = x[m] K[1] + x[m+1] K[3].
  """
  features: int
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  # Not differentiated (inference): on small inputs, skip the kernel's transposed copy (see below).
  inference: bool = False

  @nn.compact
  def __call__(self, x):
    batch, height, width, channels = x.shape
    f = self.features
    kernel = self.param("kernel", conv_init, (4, 4, channels, f), jnp.float32)
    # Taps 0 and 3 read a neighbour (m-1, m+1): on a 1-pixel axis they only meet padding.
    rows = (0, 1, 2, 3) if height > 1 else (1, 2)
    cols = (0, 1, 2, 3) if width > 1 else (1, 2)
    x = x.astype(self.dtype).reshape(-1, channels)
    taps = [(ky, kx) for ky in rows for kx in cols]
    if not self.inference or x.shape[0] >= PER_TAP_BELOW_ROWS:
      # One product with all taps: z[b, m, n, ky, kx] = x[b, m, n] . K[ky, kx].
      live = kernel[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # [taps_y, taps_x, C, F]
      z = jnp.dot(x, live.transpose(2, 0, 1, 3).reshape(channels, -1).astype(self.dtype))
      z = z.reshape(batch, height, width, len(taps), f)
      z = {tap: z[..., i, :] for i, tap in enumerate(taps)}
    else:
      # Few pixels: one product per tap reads the kernel in place instead of paying for the
      # transposed copy above (as costly as the product itself at batch 1). Not in training: there
      # sixteen small weight-gradient products cost more than the one copy.
      z = {(ky, kx): jnp.dot(x, kernel[ky, kx].astype(self.dtype)).reshape(batch, height, width, f)
           for ky, kx in taps}
    # Padded by one pixel so that the shifted reads below are slices.
    z = {tap: jnp.pad(plane, ((0, 0), (1, 1), (1, 1), (0, 0))) for tap, plane in z.items()}
    offset = (0, 1, 1, 2)  # tap k reads z[m - 1], z[m], z[m], z[m + 1]

    def phase(r, s):  # y[:, r::2, s::2]
      return sum(z[ky, kx][:, offset[ky]:offset[ky] + height, offset[kx]:offset[kx] + width]
                 for ky in (r, r + 2) if ky in rows for kx in (s, s + 2) if kx in cols)

    y = jnp.stack([jnp.stack([phase(r, s) for s in (0, 1)], axis=3) for r in (0, 1)], axis=2)
    y = y.reshape(batch, 2 * height, 2 * width, f)  # [B, H, r, W, s, F] -> interleaved
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (f,), jnp.float32).astype(self.dtype)
    return y
