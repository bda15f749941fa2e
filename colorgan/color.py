"""sRGB <-> CIE Lab (D65, 2 degree observer), the sRGB gamut, and the model's scaling of L and ab.

Written once for both array libraries: each conversion takes `xp`, jax.numpy (the default:
training, evaluation and export, where it is traced) or numpy (colorize's full-resolution photos on
the host). The formulas and constants follow `skimage.color.rgb2lab` / `lab2rgb` (their tests are
the reference).
Every piecewise branch is evaluated on a clamped input (the "double where" trick) so that gradients
stay finite everywhere, including at black, where cbrt and the sRGB power have infinite slope.
"""

from types import ModuleType

import jax.numpy as jnp
import numpy as np

# The constants are numpy, not jax arrays: importing colorgan must not start a JAX backend (a
# program has to be able to call jax.distributed.initialize() after importing it).
# skimage.color.colorconv.xyz_from_rgb (sRGB primaries, D65).
XYZ_FROM_RGB = np.array(
  [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
  dtype=np.float32,
)
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB.astype(np.float64)).astype(np.float32)
# skimage's D65 reference white for the 2 degree observer.
D65_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)

LAB_EPSILON = 0.008856  # (6/29)^3, rounded as in skimage
LAB_KAPPA = 7.787  # (29/6)^2 / 3, rounded as in skimage
LAB_F_THRESHOLD = 0.2068966  # cbrt(LAB_EPSILON): where f(t) switches from linear to cube

L_SCALE, L_SHIFT = 50.0, 1.0  # L in [0, 100] -> [-1, 1]
AB_SCALE = 110.0  # a, b in about [-110, 110] -> about [-1, 1]

GAMUT_TOLERANCE = 1e-5  # linear RGB; gray (ab = 0) lands within float error of [0, 1]
GAMUT_BISECTIONS = 10  # the chroma scale found to 1/1024


def srgb_to_linear(c, xp: ModuleType = jnp):
  """sRGB in [0, 1] -> linear RGB (same shape)."""
  linear_part = c / 12.92
  safe = xp.maximum(c, 0.04045)
  power_part = ((safe + 0.055) / 1.055) ** 2.4
  return xp.where(c > 0.04045, power_part, linear_part)


def linear_to_srgb(c, xp: ModuleType = jnp):
  """Linear RGB -> sRGB (same shape); values outside [0, 1] are not clipped."""
  linear_part = c * 12.92
  safe = xp.maximum(c, 0.0031308)
  power_part = 1.055 * safe ** (1 / 2.4) - 0.055
  return xp.where(c > 0.0031308, power_part, linear_part)


def _channels(x, xp: ModuleType):
  """[..., 3] -> its three [...] channels. Not x[..., i]: with a dynamic height and width (export),
  that indexing lowers to a gather which the TFLite converter cannot take."""
  return xp.unstack(x, axis=-1)


def lab_f(t, xp: ModuleType = jnp):
  """Lab's f(t) of a tristimulus ratio t = X/Xn (Y/Yn, Z/Zn): a cube root, linear near black."""
  safe = xp.maximum(t, LAB_EPSILON)
  return xp.where(t > LAB_EPSILON, xp.cbrt(safe), LAB_KAPPA * t + 16.0 / 116.0)


def rgb_to_lab(rgb, xp: ModuleType = jnp):
  """Converts sRGB to CIE Lab.

  Args:
    rgb: float array [..., 3] with values in [0, 1].
    xp: jax.numpy or numpy.

  Returns:
    float32 array [..., 3]: L in [0, 100], a and b roughly in [-110, 110].
  """
  rgb = xp.asarray(rgb, xp.float32)
  xyz = srgb_to_linear(rgb, xp) @ XYZ_FROM_RGB.T
  fx, fy, fz = _channels(lab_f(xyz / D65_WHITE, xp), xp)
  return xp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def linear_to_lightness(linear_rgb, xp: ModuleType = jnp):
  """Linear RGB [..., 3] -> CIE L [...] in [0, 100] alone (rgb_to_lab's first channel, from Y)."""
  y = linear_rgb @ XYZ_FROM_RGB[1]  # Y / Y_white: the white's Y is 1
  return 116.0 * lab_f(y, xp) - 16.0


def _f_to_linear_rgb(f, xp: ModuleType):
  """Lab's f(X/Xn), f(Y/Yn), f(Z/Zn) [..., 3] -> linear RGB [..., 3], unclipped."""
  safe = xp.maximum(f, LAB_F_THRESHOLD)
  # numpy: ** 3 calls pow(), 6x slower than this product, which XLA computes for ** 3 anyway.
  cube_part = safe * safe * safe if xp is np else safe**3
  linear_part = (f - 16.0 / 116.0) / LAB_KAPPA
  xyz = xp.where(f > LAB_F_THRESHOLD, cube_part, linear_part) * D65_WHITE
  return xyz @ RGB_FROM_XYZ.T


def lab_channels_to_linear_rgb(l, a, b, xp: ModuleType = jnp):
  """L, a, b [...] (Lab units, a and b unbounded) -> linear RGB [..., 3], unclipped."""
  fy = (l + 16.0) / 116.0
  return _f_to_linear_rgb(xp.stack([fy + a / 500.0, fy, fy - b / 200.0], axis=-1), xp)


def lab_to_linear_rgb(lab, xp: ModuleType = jnp):
  """Converts CIE Lab to linear RGB, unclipped: a color outside the sRGB gamut has a component
  outside [0, 1] (what gamut mapping tests).

  Args:
    lab: float array [..., 3]: L in [0, 100], a, b unbounded.
    xp: jax.numpy or numpy.

  Returns:
    float32 array [..., 3].
  """
  return lab_channels_to_linear_rgb(*_channels(xp.asarray(lab, xp.float32), xp), xp)


def lab_to_rgb(lab, xp: ModuleType = jnp):
  """Converts CIE Lab to sRGB, clipped to [0, 1] like skimage (out-of-gamut colors are clamped).

  Args:
    lab: float array [..., 3]: L in [0, 100], a, b unbounded.
    xp: jax.numpy or numpy.

  Returns:
    float32 array [..., 3] in [0, 1].
  """
  l, a, b = _channels(xp.asarray(lab, xp.float32), xp)
  fy = (l + 16.0) / 116.0
  # skimage clamps negative z (colors no light can produce) to 0 before the inverse.
  f = xp.stack([fy + a / 500.0, fy, xp.maximum(fy - b / 200.0, 0.0)], axis=-1)
  return xp.clip(linear_to_srgb(_f_to_linear_rgb(f, xp), xp), 0.0, 1.0)


def in_gamut(linear_rgb, xp: ModuleType = jnp):
  """Linear RGB [..., 3] -> bool [...]: inside the sRGB gamut, up to GAMUT_TOLERANCE.

  Min and max, not all(): reductions the ONNX and TFLite exports translate.
  """
  return (xp.min(linear_rgb, axis=-1) >= -GAMUT_TOLERANCE) & (
    xp.max(linear_rgb, axis=-1) <= 1 + GAMUT_TOLERANCE
  )


def chroma_scale(l, a, b, xp: ModuleType = jnp):
  """The largest s in [0, 1] (to 2**-GAMUT_BISECTIONS, by bisection) with (L, s a, s b) in gamut.

  s = 0 (gray) always fits, so the answer keeps L and hue and only reduces chroma.

  Args:
    l, a, b: [...] Lab units.
    xp: jax.numpy or numpy.

  Returns:
    [...] the scale (float, as l).
  """
  lo, hi = xp.zeros_like(l), xp.ones_like(l)  # in gamut / out of gamut
  for _ in range(GAMUT_BISECTIONS):
    mid = 0.5 * (lo + hi)
    fits = in_gamut(lab_channels_to_linear_rgb(l, a * mid, b * mid, xp), xp)
    lo, hi = xp.where(fits, mid, lo), xp.where(fits, hi, mid)
  return lo


def lab_to_srgb_uint8(l, a, b, xp: ModuleType = jnp):
  """L, a, b [...] (Lab units) -> uint8 sRGB [..., 3] keeping L and hue (colorize's output).

  Where a color lies outside the sRGB gamut its chroma (not its L, not its hue) is reduced by
  chroma_scale until it fits; clipping RGB instead would change the lightness.

  Args:
    l, a, b: float32 [...]; numpy arrays for xp=numpy.
    xp: jax.numpy (every pixel runs the bisection: a traced program has no data-dependent subset)
      or numpy (only the pixels outside the gamut do).
  """
  linear = lab_channels_to_linear_rgb(l, a, b, xp)
  inside = in_gamut(linear, xp)
  if xp is np:
    outside = ~inside
    if outside.any():
      l, a, b = l[outside], a[outside], b[outside]
      s = chroma_scale(l, a, b, xp)
      linear[outside] = lab_channels_to_linear_rgb(l, a * s, b * s, xp)
  else:
    s = chroma_scale(l, a, b, xp)
    linear = xp.where(inside[..., None], linear, lab_channels_to_linear_rgb(l, a * s, b * s, xp))
  srgb = linear_to_srgb(xp.clip(linear, 0.0, 1.0), xp)
  return xp.round(srgb * 255.0).astype(xp.uint8)


def colorfulness(rgb, xp: ModuleType = jnp, *, ddof: int = 0, eps: float = 0.0):
  """Hasler & Suesstrunk's colourfulness of each image, in the units of rgb (e.g. [0, 255]).

  rgb: [..., H, W, 3] float -> [...]. rg = |R - G|, yb = |(R + G) / 2 - B|,
  CF = sqrt(std_rg^2 + std_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2), population standard deviations
  as in the paper's reference implementation (ddof=1: unbiased, as torch.std). eps > 0 inside the
  square roots keeps gradients finite on a gray image (the colourfulness losses).
  """
  r, g, b = _channels(rgb, xp)
  rg, yb = xp.abs(r - g), xp.abs(0.5 * (r + g) - b)
  axes = (-2, -1)
  std = xp.sqrt(xp.var(rg, axis=axes, ddof=ddof) + xp.var(yb, axis=axes, ddof=ddof) + eps)
  mean = xp.sqrt(xp.mean(rg, axis=axes) ** 2 + xp.mean(yb, axis=axes) ** 2 + eps)
  return std + 0.3 * mean


def scale_l(l):
  """L in [0, 100] -> model input in [-1, 1]."""
  return l / L_SCALE - L_SHIFT


def unscale_l(l_scaled):
  """Model-scale L in [-1, 1] -> L in [0, 100]."""
  return (l_scaled + L_SHIFT) * L_SCALE


def scale_ab(ab):
  """a, b in about [-110, 110] -> model scale, about [-1, 1]."""
  return ab / AB_SCALE


def unscale_ab(ab_scaled):
  """Model-scale ab -> a, b in Lab units."""
  return ab_scaled * AB_SCALE


def rgb_uint8_to_model_lab(rgb_uint8):
  """uint8 RGB batch -> (L, ab) at model scale; runs on device inside the jitted step.

  Args:
    rgb_uint8: [..., H, W, 3] uint8.

  Returns:
    l: [..., H, W, 1] in [-1, 1]; ab: [..., H, W, 2] in about [-1, 1]. Both float32.
  """
  lab = rgb_to_lab(jnp.asarray(rgb_uint8, jnp.float32) / 255.0)
  return scale_l(lab[..., :1]), scale_ab(lab[..., 1:])


def model_lab_to_rgb(l, ab):
  """Model-scale L [..., 1] and ab [..., 2] -> float RGB [..., 3] in [0, 1]."""
  lab = jnp.concatenate([unscale_l(l), unscale_ab(ab)], axis=-1)
  return lab_to_rgb(lab)
