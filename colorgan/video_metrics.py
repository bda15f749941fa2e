"""The temporal-consistency metrics of video colorization, for any tool's output.

  python -m colorgan.video_metrics COLORIZED [--original=GRAY_OR_COLOR_VIDEO] \
      [--reference=TRUE_COLOR_VIDEO]

- E_warp (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): for each pair of frames, the
  optical flow between the INPUT frames (the original's gray, or the colorized video's own gray when no
  original is given) warps frame t onto frame t-1; the error is the mean squared RGB difference (in
  [0, 1], per channel) over the pixels their occlusion rule keeps (video_flow.occluded), averaged
  over the pairs. The flow is OpenCV's DIS (theirs was FlowNet2), so compare values computed here.
- E_warp_gray: the same for the gray input, replicated to RGB: the floor a tool cannot beat from the
  input's own flicker and flow errors. E_warp_excess = E_warp - E_warp_gray: a gray output scores
  near 0, so stability bought by desaturation shows in colorfulness, not here.
- CDC (Liu et al. 2021): the Jensen-Shannon divergence of the R, G and B histograms (256 bins) of
  frames 1, 2 and 4 apart, averaged over channels, pairs and the three distances (those a short
  clip has).
- colorfulness: Hasler and Suesstrunk 2003's metric per frame (mean; 0 for gray).
- PSNR (capped at 100 dB) and SSIM (mean over frames, uint8 RGB) against --reference, when given.
The videos are streamed; they must have the same frame count and size. The last line of stdout is
one JSON object with those keys (null where a video was not given).
"""

import collections
import json
import sys
from typing import Callable, Iterable, Iterator

from absl import app
from absl import flags
import cv2
import numpy as np

from colorgan import cli
from colorgan import errors
from colorgan.inference import video_flow
from colorgan.inference import video_io

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "original",
  None,
  "The input video (gray or color; only its gray is used): "
  "the flow is computed on it and E_warp_gray is its own warping error.",
)
flags.DEFINE_string("reference", None, "The true-color video, for PSNR and SSIM.")

CDC_DISTANCES = (1, 2, 4)
# (gray t-1, gray t, t) -> (flow t-1 -> t, flow t -> t-1); the benchmark passes its exact motion.
FlowFunction = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def gray(rgb: np.ndarray) -> np.ndarray:
  """uint8 RGB [H, W, 3] -> uint8 luma [H, W] (BT.601, as the flow's input and the gray baseline)."""
  return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def dis_flows(preset: str = "medium") -> FlowFunction:
  """Both flows of a pair of gray frames by DIS, refined down to full size (finest scale 0: on the
  benchmark's pan and zoom, E_warp within 4% of its value with the exact motion, against 26% at the
  preset's half size)."""
  flow = video_flow.Flow(preset, finest_scale=0)
  return lambda a, b, _: (flow(a, b), flow(b, a))


def warp_error(
  prev: np.ndarray, cur: np.ndarray, forward: np.ndarray, backward: np.ndarray
) -> float:
  """Lai et al.'s error of one pair: frame t (cur) warped onto t-1 by the flow t-1 -> t, against t-1,
  over the pixels not occluded on t-1's grid; uint8 RGB in, squared error in [0, 1] units out."""
  keep = ~video_flow.occluded(forward, backward)
  warped, _ = video_flow.warp(cur.astype(np.float32) / 255.0, forward)
  diff = (warped - prev.astype(np.float32) / 255.0) * keep[..., None]
  count = keep.sum() * prev.shape[-1]
  return float(np.square(diff).sum() / (count if count else diff.size))


def colorfulness(rgb: np.ndarray) -> float:
  """Hasler and Suesstrunk 2003's colorfulness of a uint8 RGB frame."""
  r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
  rg, yb = r - g, 0.5 * (r + g) - b
  return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def rgb_histograms(rgb: np.ndarray) -> np.ndarray:
  """[3, 256] normalized histograms of R, G and B."""
  flat = rgb.reshape(-1, 3)
  return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(3)]) / len(flat)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
  """Jensen-Shannon divergence (natural log) of two distributions, mean over leading axes."""
  m = 0.5 * (p + q)
  kl = lambda a: np.sum(
    np.where(
      a > 0,
      a * np.log(np.where(a > 0, a, 1) / np.where(m > 0, m, 1)),  # noqa: E731
      0.0,
    ),
    axis=-1,
  )
  return float(np.mean(0.5 * kl(p) + 0.5 * kl(q)))


PSNR_CAP = 100.0  # dB, for identical frames (JSON has no infinity)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR of two uint8 frames in dB, at most PSNR_CAP."""
  mse = np.mean(np.square(a.astype(np.float64) - b.astype(np.float64)))
  return PSNR_CAP if mse == 0 else float(min(PSNR_CAP, 10 * np.log10(255.0**2 / mse)))


class _Means:
  """Running means by name."""

  def __init__(self):
    self.sums = collections.defaultdict(float)
    self.counts = collections.defaultdict(int)

  def add(self, name: str, value: float) -> None:
    self.sums[name] += value
    self.counts[name] += 1

  def get(self, name: str) -> float | None:
    return self.sums[name] / self.counts[name] if self.counts[name] else None


def evaluate(
  colorized: Iterable[np.ndarray],
  original: Iterable[np.ndarray] | None = None,
  reference: Iterable[np.ndarray] | None = None,
  flows: FlowFunction | None = None,
) -> dict:
  """The metrics (module docstring) of streams of uint8 RGB frames [H, W, 3] of one size.

  Args:
    colorized: the output to score.
    original: the input video (its gray gives the flow and E_warp_gray); None: the colorized
      video's own gray stands in.
    reference: the true colors, for PSNR/SSIM; None: those are null.
    flows: the flow pair of two gray frames (default: dis_flows(), DIS at full size).

  Raises:
    errors.VideoError: the videos differ in frame count or size.
  """
  from skimage import metrics as sk_metrics  # pylint: disable=g-import-not-at-top  (only with SSIM)

  flows = flows or dis_flows()
  means, history = _Means(), collections.deque(maxlen=max(CDC_DISTANCES))
  prev = None
  frames = 0
  for t, (out, source, truth) in enumerate(_zip_frames(colorized, original, reference)):
    frames += 1
    g = gray(source if source is not None else out)
    g_rgb = np.repeat(g[..., None], 3, axis=-1)
    if prev is not None:
      forward, backward = flows(prev[1], g, t)
      means.add("E_warp", warp_error(prev[0], out, forward, backward))
      means.add("E_warp_gray", warp_error(prev[2], g_rgb, forward, backward))
    hist = rgb_histograms(out)
    for d in CDC_DISTANCES:
      if len(history) >= d:
        means.add(f"cdc{d}", js_divergence(history[-d], hist))
    history.append(hist)
    means.add("colorfulness", colorfulness(out))
    if truth is not None:
      means.add("psnr", psnr(out, truth))
      means.add(
        "ssim", float(sk_metrics.structural_similarity(out, truth, channel_axis=-1, data_range=255))
      )
    prev = (out, g, g_rgb)
  cdcs = [c for c in (means.get(f"cdc{d}") for d in CDC_DISTANCES) if c is not None]
  e_warp, e_gray = means.get("E_warp"), means.get("E_warp_gray")
  return {
    "frames": frames,
    "E_warp": e_warp,
    "E_warp_gray": e_gray,
    "E_warp_excess": None if e_warp is None else e_warp - e_gray,
    "cdc": float(np.mean(cdcs)) if cdcs else None,
    "colorfulness": means.get("colorfulness"),
    "psnr": means.get("psnr"),
    "ssim": means.get("ssim"),
    "gray_from": "original" if original is not None else "colorized",
  }


def _zip_frames(colorized, original, reference) -> Iterator[tuple]:
  """Frames of the three streams side by side; a missing stream gives None."""
  streams = [iter(colorized)] + [iter(s) if s is not None else None for s in (original, reference)]
  names = ("colorized", "--original", "--reference")
  for t in range(sys.maxsize):
    row = [next(s, None) if s is not None else None for s in streams]
    given = [f for f, s in zip(row, streams) if s is not None]
    if all(f is None for f in given):
      return
    if any(f is None for f in given):
      short = [n for n, f, s in zip(names, row, streams) if s is not None and f is None]
      raise errors.VideoError(
        f"{short[0]} ends at frame {t}, before the other video(s): the "
        "videos must have the same frames"
      )
    if any(f.shape != row[0].shape for f in given):
      raise errors.VideoError(
        f"frame {t}: sizes differ ({', '.join(str(f.shape[:2]) for f in given)})"
        ": the videos must have the same size"
      )
    yield tuple(row)


def frames_of(path: str, what: str) -> Iterator[np.ndarray]:
  """A video's uint8 RGB frames (stored orientation), streamed. Raises errors.VideoError."""
  info = video_io.probe(path)
  if info is None:
    raise errors.VideoError(
      f"{what}={path}: not a video colorgan can read (corrupt, truncated, or not a video)"
    )
  return (frame.rgb for frame in video_io.read_frames(info))


@cli.exit_on_error
def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise errors.UsageError(
      "give one colorized video: python -m colorgan.video_metrics "
      "COLORIZED [--original=VIDEO] [--reference=VIDEO]"
    )
  colorized = frames_of(argv[1], "COLORIZED")
  original = frames_of(FLAGS.original, "--original") if FLAGS.original else None
  reference = frames_of(FLAGS.reference, "--reference") if FLAGS.reference else None
  result = evaluate(colorized, original, reference)
  if result["frames"] < 2:
    raise errors.VideoError(f"{argv[1]}: {result['frames']} frame(s): the metrics need two or more")
  for key, value in result.items():
    if isinstance(value, float):
      print(f"{key:>14}: {value:.6g}")
  print(json.dumps(result))


@cli.exit_on_error
def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return FLAGS(argv)
  except flags.Error as e:
    raise errors.UsageError(f"{' '.join(str(e).split())} (see --helpfull)") from None


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
