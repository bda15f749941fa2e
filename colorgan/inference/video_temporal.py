"""Temporal consistency for video colorization, without training: colors carried along optical flow.

`--temporal=ema`: the previous output's ab is warped onto the current frame (DIS flow between the two
frames' lightness) and blended with the current prediction, ab = pred + c * (warped - pred), where the
confidence c = STRENGTH * (the flow is consistent both ways and stays in the frame) * (the warped
lightness agrees with the frame's own: exp(-(dL / L_SIGMA)^2)). Where c is 0 (occlusions, new content)
the prediction is kept as is; at a scene cut (the L histograms of two frames differ by more than
CUT_DISTANCE, or too little of the frame can be followed) everything restarts from the prediction.
L is never changed: only ab is filtered, and each frame keeps its own lightness.

`--temporal=hints` (generators trained with color hints): the filter runs as in ema, and its colors,
where the carry is confident, are given to the network as hint points on a sparse grid; the network's
answer is what is shown, so that it keeps the colors and still corrects them where the content changes.
The filter's state is never a hinted answer: fed back, the hints would feed on themselves.

The filter works at WORK_SIDE (long side) or the frame's size if smaller: ab is smooth (the generator
predicts it at its own size), so nothing is lost, and the flow stays cheap on HD frames.
"""

import threading
from typing import NamedTuple

import numpy as np

from colorgan import color
from colorgan.inference import video_flow

MODES = ("none", "ema", "hints")
WORK_SIDE = 384
STRENGTH = 0.95  # the share of the carried color where the flow is fully trusted
L_SIGMA = 10.0  # L units: a warped pixel whose lightness is this far off gets weight exp(-1)
CUT_DISTANCE = 0.5  # total variation between L histograms above which a frame starts a new shot
MIN_FOLLOWED = 0.2  # below this share of followed pixels, the frame is treated as a new shot
HINT_STRIDE = 4  # hints mode: one hint cell in HINT_STRIDE^2 of the model's grid
HINT_CONFIDENCE = 0.6  # hints mode: the least confidence (of STRENGTH) for a cell to become a hint


def work_shape(height: int, width: int) -> tuple[int, int]:
  """The (h, w) the filter works at: the frame's, shrunk so that its long side is <= WORK_SIDE."""
  scale = min(1.0, WORK_SIDE / max(height, width))
  return max(1, round(height * scale)), max(1, round(width * scale))


class State(NamedTuple):
  """What the filter carries from one frame to the next (saved with each segment for --resume)."""

  l: np.ndarray  # float32 [h, w]: the previous frame's L at work size
  ab: np.ndarray  # float32 [h, w, 2]: the previous output's ab at work size

  def to_arrays(self) -> dict[str, np.ndarray]:
    return {"l": self.l, "ab": self.ab}

  @classmethod
  def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "State | None":
    return cls(arrays["l"], arrays["ab"]) if "l" in arrays else None


class Carried(NamedTuple):
  ab: np.ndarray  # float32 [h, w, 2]: the previous output warped onto this frame
  confidence: np.ndarray  # float32 [h, w] in [0, STRENGTH]


class Motion(NamedTuple):
  """How a frame follows from the previous one: all of it comes from the two frames' L, so it can be
  computed ahead (in other threads, while the generator runs)."""

  back: np.ndarray  # float32 [h, w, 2]: flow on this frame's grid to the previous frame
  confidence: np.ndarray  # float32 [h, w] in [0, STRENGTH]


_THREAD = threading.local()  # OpenCV's DIS object is one per thread


def estimate_motion(prev_l: np.ndarray, l: np.ndarray, flow=None) -> Motion | None:
  """The Motion from the frame whose work-size L is `prev_l` to the one whose L is `l`; None where
  `l` starts a new shot. flow: a video_flow.Flow (None: this thread's, medium preset)."""
  if flow is None:
    if not hasattr(_THREAD, "flow"):
      _THREAD.flow = video_flow.Flow()
    flow = _THREAD.flow
  if (
    video_flow.histogram_distance(video_flow.histogram(prev_l), video_flow.histogram(l))
    > CUT_DISTANCE
  ):
    return None
  back = flow(l, prev_l)  # on this frame's grid, to the previous frame
  followed = ~video_flow.occluded(back, flow(prev_l, l))
  if followed.mean() < MIN_FOLLOWED:
    return None
  l_warped, _ = video_flow.warp(prev_l, back)
  agree = np.exp(-np.square((l - l_warped) / L_SIGMA))
  return Motion(back, (STRENGTH * followed.astype(np.float32) * agree).astype(np.float32))


_ESTIMATE = object()  # carry's default: estimate the motion now


class TemporalFilter:
  """Carries colors from frame to frame (see the module docstring). Not thread-safe."""

  def __init__(self, mode: str, state: State | None = None, flow_preset: str = "medium"):
    if mode not in MODES:
      raise ValueError(f"temporal mode {mode!r} is not one of {', '.join(MODES)}")
    self.mode = mode
    self.state = state
    self._flow = video_flow.Flow(flow_preset)
    self.cuts = 0  # scene cuts seen (for the summary)

  def carry(self, l: np.ndarray, motion: Motion | None = _ESTIMATE) -> Carried | None:
    """The previous output warped onto the frame whose work-size L is `l`, with its confidence;
    None for the first frame, after a scene cut, or with mode "none". motion: estimate_motion(the
    previous frame's L, l) if already computed."""
    if self.mode == "none" or self.state is None or self.state.l.shape != l.shape:
      return None
    if motion is _ESTIMATE:
      motion = estimate_motion(self.state.l, l, self._flow)
    if motion is None:
      self.cuts += 1
      return None
    ab, _ = video_flow.warp(self.state.ab, motion.back)
    return Carried(ab, motion.confidence)

  def blend(self, l: np.ndarray, ab: np.ndarray, carried: Carried | None) -> np.ndarray:
    """The output ab [h, w, 2] of a frame from its prediction `ab` (work size, Lab units); it
    becomes the state the next frame is carried from."""
    if carried is not None and self.mode != "none":
      ab = ab + carried.confidence[..., None] * (carried.ab - ab)
    ab = np.asarray(ab, np.float32)
    self.state = State(np.asarray(l, np.float32), ab)
    return ab

  def step(self, l: np.ndarray, ab: np.ndarray, motion: Motion | None = _ESTIMATE) -> np.ndarray:
    """carry + blend in one call."""
    return self.blend(l, ab, self.carry(l, motion))


def hint_map(carried: Carried, content: tuple[int, int], size: int) -> np.ndarray:
  """Confident carried colors as the generator's hint map [size, size, 3] (model scale): on a sparse
  grid (every HINT_STRIDE-th cell) of the content's top-left h x w cells, as photo.model_input
  places a frame; the padding gets none."""
  h, w = content
  ab = video_flow.resize(carried.ab, h, w)
  confidence = video_flow.resize(carried.confidence, h, w)
  grid = np.zeros((size, size, 3), np.float32)
  sparse = np.zeros((h, w), bool)
  sparse[HINT_STRIDE // 2 :: HINT_STRIDE, HINT_STRIDE // 2 :: HINT_STRIDE] = True
  mask = sparse & (confidence >= HINT_CONFIDENCE * STRENGTH)
  grid[:h, :w, :2] = np.where(mask[..., None], np.asarray(color.scale_ab(ab), np.float32), 0.0)
  grid[:h, :w, 2] = mask
  return grid
