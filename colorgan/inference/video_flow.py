"""Optical flow on gray frames and what follows from it: warping, occlusion, scene cuts.

The flow is OpenCV's DIS (Kroeger et al. 2016): no weights to download, tens of milliseconds a frame
at a few hundred pixels on a CPU. Conventions: `flow(a, b)` lives on a's grid and points to where each
pixel of a is in b, so `warp(image_of_b, flow(a, b))` brings b's content onto a's grid (backward
warping, bilinear). The occlusion rule is the one of Lai et al. 2018 (after Ruder et al. 2016), used by
both the temporal filter and colorgan.video_metrics.
"""

import cv2
import numpy as np

PRESETS = {
  "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
  "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
  "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
HISTOGRAM_BINS = 32
MIN_SIDE = 16


class Flow:
  """A DIS optical flow estimator (one per thread: OpenCV's object keeps state between calls)."""

  def __init__(self, preset: str = "medium", finest_scale: int | None = None):
    """preset: a key of PRESETS; finest_scale: the pyramid level DIS stops at (the presets' 1 or 2
    is half or a quarter of the size; 0, full size, follows small and thin motion more closely)."""
    self._dis = cv2.DISOpticalFlow_create(PRESETS[preset])
    if finest_scale is not None:
      self._dis.setFinestScale(finest_scale)

  def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Gray frames a, b ([H, W] uint8, or CIE L in [0, 100]) -> flow [H, W, 2] (x, y) from a to b."""
    if max(a.shape) < MIN_SIDE:  # DIS refuses tiny frames; there is no motion to see in them
      return np.zeros(a.shape + (2,), np.float32)
    return self._dis.calc(to_uint8(a), to_uint8(b), None)


def to_uint8(gray: np.ndarray) -> np.ndarray:
  """CIE L in [0, 100] (float) -> [0, 255] uint8; uint8 passes through."""
  if gray.dtype == np.uint8:
    return gray
  return np.clip(np.round(gray * 2.55), 0, 255).astype(np.uint8)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  return np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """image [H, W] or [H, W, C] sampled at x + flow(x), bilinear.

  Returns:
    (warped image, inside [H, W] bool: the sample fell inside the image).
  """
  height, width = flow.shape[:2]
  xs, ys = _grid(height, width)
  map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
  warped = cv2.remap(
    np.ascontiguousarray(image, np.float32),
    map_x,
    map_y,
    cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_REPLICATE,
  )
  inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
  return warped.reshape(image.shape), inside


def _squared_norm(flow: np.ndarray) -> np.ndarray:
  """|flow|^2 per pixel: x^2 + y^2 (np.sum over a last axis of 2 is ~5x slower)."""
  return np.square(flow[..., 0]) + np.square(flow[..., 1])


def occluded(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
  """Lai et al. 2018's occlusion mask on a's grid ([H, W] bool), from the flows both ways.

  A pixel is occluded where going a -> b -> a does not come back (|f + f_back|^2 > 0.01 (|f|^2 +
  |f_back|^2) + 0.5) or where the flow has a motion boundary (|grad f|^2 > 0.01 |f|^2 + 0.002), and
  (an addition) where the flow leaves the frame.
  """
  back, inside = warp(flow_ba, flow_ab)
  mag_ab = _squared_norm(flow_ab)
  round_trip = _squared_norm(flow_ab + back) > 0.01 * (mag_ab + _squared_norm(back)) + 0.5
  du = np.zeros_like(flow_ab)
  dv = np.zeros_like(flow_ab)
  du[:, :-1] = flow_ab[:, :-1] - flow_ab[:, 1:]  # as in Lai et al.'s compute_flow_gradients
  dv[:-1, :] = flow_ab[:-1, :] - flow_ab[1:, :]
  gradient = np.square(du) + np.square(dv)
  boundary = gradient[..., 0] + gradient[..., 1] > 0.01 * mag_ab + 0.002
  return round_trip | boundary | ~inside


def histogram(l: np.ndarray) -> np.ndarray:
  """CIE L [H, W] in [0, 100] -> its normalized HISTOGRAM_BINS-bin histogram."""
  counts, _ = np.histogram(l, bins=HISTOGRAM_BINS, range=(0.0, 100.0))
  return counts.astype(np.float32) / max(1, l.size)


def histogram_distance(h1: np.ndarray, h2: np.ndarray) -> float:
  """Total variation distance of two normalized histograms, in [0, 1]."""
  return 0.5 * float(np.abs(h1 - h2).sum())


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """[H, W] or [H, W, C] float32 -> [height, width(, C)], area-averaged down, bilinear up."""
  if image.shape[:2] == (height, width):
    return image
  shrink = height * width < image.shape[0] * image.shape[1]
  out = cv2.resize(
    np.ascontiguousarray(image, np.float32),
    (width, height),
    interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
  )
  return out.reshape((height, width) + image.shape[2:])
