"""sRGB <-> CIE Lab (D65, 2 degree observer) in jax.numpy, and the model's scaling of L and ab.

The formulas and constants follow `skimage.color.rgb2lab` / `lab2rgb` (their tests are the reference).
Every piecewise branch is evaluated on a clamped input (the "double where" trick) so that gradients
stay finite everywhere, including at black, where cbrt and the sRGB power have infinite slope.
"""

import jax.numpy as jnp
import numpy as np

# The constants are numpy, not jax arrays: importing colorgan must not start a JAX backend (a program
# has to be able to call jax.distributed.initialize() after importing it). They are the one
# definition of the conversion: colorize.py's host fast path for full-resolution photos uses them too.
# skimage.color.colorconv.xyz_from_rgb (sRGB primaries, D65).
XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423],
     [0.212671, 0.715160, 0.072169],
     [0.019334, 0.119193, 0.950227]], dtype=np.float32)
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB.astype(np.float64)).astype(np.float32)
# skimage's D65 reference white for the 2 degree observer.
D65_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)

LAB_EPSILON = 0.008856  # (6/29)^3, rounded as in skimage
LAB_KAPPA = 7.787       # (29/6)^2 / 3, rounded as in skimage
LAB_F_THRESHOLD = 0.2068966  # cbrt(LAB_EPSILON): where f(t) switches from linear to cube

L_SCALE, L_SHIFT = 50.0, 1.0  # L in [0, 100] -> [-1, 1]
AB_SCALE = 110.0              # a, b in about [-110, 110] -> about [-1, 1]


def srgb_to_linear(c):
  """sRGB in [0, 1] -> linear RGB (same shape)."""
  linear_part = c / 12.92
  safe = jnp.maximum(c, 0.04045)
  power_part = ((safe + 0.055) / 1.055) ** 2.4
  return jnp.where(c > 0.04045, power_part, linear_part)


def linear_to_srgb(c):
  """Linear RGB -> sRGB (same shape); values outside [0, 1] are not clipped."""
  linear_part = c * 12.92
  safe = jnp.maximum(c, 0.0031308)
  power_part = 1.055 * safe ** (1 / 2.4) - 0.055
  return jnp.where(c > 0.0031308, power_part, linear_part)


def _channels(x):
  """[..., 3] -> its three [...] channels. Not x[..., i]: with a dynamic height and width (export),
  that indexing lowers to a gather which the TFLite converter cannot take."""
  return jnp.unstack(x, axis=-1)


def rgb_to_lab(rgb):
  """Converts sRGB to CIE Lab.

  Args:
    rgb: float array [..., 3] with values in [0, 1].

  Returns:
    float32 array [..., 3]: L in [0, 100], a and b roughly in [-110, 110].
  """
  rgb = jnp.asarray(rgb, jnp.float32)
  xyz = srgb_to_linear(rgb) @ XYZ_FROM_RGB.T
  t = xyz / D65_WHITE
  safe = jnp.maximum(t, LAB_EPSILON)
  f = jnp.where(t > LAB_EPSILON, jnp.cbrt(safe), LAB_KAPPA * t + 16.0 / 116.0)
  fx, fy, fz = _channels(f)
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def _f_to_linear_rgb(f):
  """Lab's f(X/Xn), f(Y/Yn), f(Z/Zn) [..., 3] -> linear RGB [..., 3], unclipped."""
  cube_part = jnp.maximum(f, LAB_F_THRESHOLD) ** 3
  linear_part = (f - 16.0 / 116.0) / LAB_KAPPA
  xyz = jnp.where(f > LAB_F_THRESHOLD, cube_part, linear_part) * D65_WHITE
  return xyz @ RGB_FROM_XYZ.T


def lab_to_linear_rgb(lab):
  """Converts CIE Lab to linear RGB, unclipped: a color outside the sRGB gamut has a component
  outside [0, 1] (what gamut mapping tests).

  Args:
    lab: float array [..., 3]: L in [0, 100], a, b unbounded.

  Returns:
    float32 array [..., 3].
  """
  l, a, b = _channels(jnp.asarray(lab, jnp.float32))
  fy = (l + 16.0) / 116.0
  return _f_to_linear_rgb(jnp.stack([fy + a / 500.0, fy, fy - b / 200.0], axis=-1))


def lab_to_rgb(lab):
  """Converts CIE Lab to sRGB, clipped to [0, 1] like skimage (out-of-gamut colors are clamped).

  Args:
    lab: float array [..., 3]: L in [0, 100], a, b unbounded.

  Returns:
    float32 array [..., 3] in [0, 1].
  """
  l, a, b = _channels(jnp.asarray(lab, jnp.float32))
  fy = (l + 16.0) / 116.0
  # skimage clamps negative z (colors no light can produce) to 0 before the inverse.
  f = jnp.stack([fy + a / 500.0, fy, jnp.maximum(fy - b / 200.0, 0.0)], axis=-1)
  return jnp.clip(linear_to_srgb(_f_to_linear_rgb(f)), 0.0, 1.0)


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
