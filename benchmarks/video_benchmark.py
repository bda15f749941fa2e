"""Flicker, fidelity and speed of video colorization (--temporal none / ema / hints), on clips with
known motion built here from photos: a camera pan, a zoom, and an object cut from another photo
moving over a still one. The input is the clips' gray (lightness only); the truth is their colors.

  python benchmarks/video_benchmark.py --workdir=RUN --photos=../shared/data/bsds500/val \
      [--frames=60 --height=120 --temporal=none,ema,hints --memory_frames=200,2000]

For each clip and mode: colorgan.video_metrics with the EXACT motion (E_warp, its excess over the gray
input, CDC, colourfulness, PSNR/SSIM against the true colors), E_warp with DIS flow (to check it
against the exact one), and frames/s of colorize_video. --memory_frames colorizes long pans in child
processes and reports their peak RSS. One JSON line per clip and mode, then a summary JSON line.
"""

import fractions
import json
import os
import resource
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from colorgan import video_metrics  # noqa: E402
from colorgan.inference import colorize  # noqa: E402
from colorgan.inference import photo as photo_lib  # noqa: E402
from colorgan.inference import video  # noqa: E402
from colorgan.inference import video_io  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A trained run (its latest checkpoint colorizes).")
flags.DEFINE_string("photos", "../shared/data/bsds500/val", "Folder of photos to build clips from.")
flags.DEFINE_integer("frames", 60, "Frames per clip.")
flags.DEFINE_integer("height", 120, "Frame height (width: 4/3 of it).")
flags.DEFINE_list(
  "temporal", ["none", "ema", "hints"], "Modes to compare (hints: runs with hints)."
)
flags.DEFINE_integer("batch_size", 8, "Colorizer batch size.")
flags.DEFINE_list("memory_frames", [], "Frame counts of long pans whose peak RSS is measured.")
flags.DEFINE_string(
  "strip", None, "A PNG of the object clip's frames: the gray input, each --temporal, the truth."
)
flags.DEFINE_integer("memory_run", 0, "Internal: colorize a pan of this many frames, print RSS.")

RATE = fractions.Fraction(30000, 1001)
TIME_BASE = fractions.Fraction(1, 30000)


def _photo(index: int) -> np.ndarray:
  names = sorted(n for n in os.listdir(FLAGS.photos) if not n.startswith("."))
  with Image.open(os.path.join(FLAGS.photos, names[index % len(names)])) as image:
    return np.asarray(image.convert("RGB"))


def pan(n: int, h: int, w: int, v=(1, 2)):
  """A camera pan over photo 0 by v = (dy, dx) pixels a frame; flow t-1 -> t is -v everywhere."""
  photo = cv2.resize(_photo(0), (w + n * v[1] + 1, h + n * v[0] + 1), interpolation=cv2.INTER_AREA)
  frames = [photo[t * v[0] : t * v[0] + h, t * v[1] : t * v[1] + w] for t in range(n)]
  flow = np.zeros((h, w, 2), np.float32)
  flow[..., 0], flow[..., 1] = -v[1], -v[0]
  return frames, lambda a, b, t: (flow, -flow)


def zoom(n: int, h: int, w: int, rate: float = 1.01):
  """A zoom into photo 1 by `rate` a frame; flow t-1 -> t is (rate - 1) (x - center)."""
  photo = cv2.resize(_photo(1), (w, h), interpolation=cv2.INTER_AREA)
  center = np.array([(w - 1) / 2, (h - 1) / 2], np.float32)
  frames = []
  for t in range(n):
    m = cv2.getRotationMatrix2D(tuple(float(c) for c in center), 0.0, rate**t)
    frames.append(
      cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    )
  xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
  offset = np.stack([xs - center[0], ys - center[1]], axis=-1)
  forward, backward = (rate - 1) * offset, (1 / rate - 1) * offset
  return frames, lambda a, b, t: (forward, backward)


def moving_object(n: int, h: int, w: int, v=(0, 2)):
  """A patch of photo 3 sliding by v over still photo 2: flow v on the object, 0 elsewhere."""
  back = cv2.resize(_photo(2), (w, h), interpolation=cv2.INTER_AREA)
  oh, ow = h // 3, w // 4
  patch = cv2.resize(_photo(3), (ow, oh), interpolation=cv2.INTER_AREA)
  frames, boxes = [], []
  for t in range(n):
    y, x = h // 3 + t * v[0], (w // 8 + t * v[1]) % (w - ow)
    frame = back.copy()
    frame[y : y + oh, x : x + ow] = patch
    frames.append(frame)
    boxes.append((y, x))

  def flows(a, b, t):
    forward, backward = np.zeros((h, w, 2), np.float32), np.zeros((h, w, 2), np.float32)
    (y0, x0), (y1, x1) = boxes[t - 1], boxes[t]
    forward[y0 : y0 + oh, x0 : x0 + ow] = (x1 - x0, y1 - y0)
    backward[y1 : y1 + oh, x1 : x1 + ow] = (x0 - x1, y0 - y1)
    return forward, backward

  return frames, flows


def write(path: str, frames) -> None:
  """The gray input (each frame's lightness, no color) as an H.264 mp4 at 29.97 fps."""
  with av.open(path, "w") as out:
    stream = out.add_stream("libx264", rate=RATE, options={"crf": "12"})
    stream.height, stream.width = frames[0].shape[:2]
    stream.codec_context.time_base = TIME_BASE
    for i, rgb in enumerate(frames):
      l = photo_lib.lightness(rgb)
      gray = photo_lib.compose(l, np.zeros(l.shape + (2,), np.float32))
      frame = av.VideoFrame.from_ndarray(gray, format="rgb24")
      frame.pts, frame.time_base = i * 1001, stream.codec_context.time_base
      out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _decode(path: str):
  return video_metrics.frames_of(path, "video")


def _memory_run(n: int) -> None:
  colorizer = colorize.Colorizer.from_checkpoint(FLAGS.workdir, batch_size=FLAGS.batch_size)
  with tempfile.TemporaryDirectory() as tmp:
    frames, _ = pan(n, 64, 96, (0, 1))
    write(os.path.join(tmp, "in.mp4"), frames)
    del frames
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    video.colorize_video(
      colorizer, os.path.join(tmp, "in.mp4"), os.path.join(tmp, "out.mp4"), progress=False
    )
  print(
    json.dumps(
      {
        "frames": n,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": before / 1024,
      }
    )
  )


def save_strip(path: str, rows: list[tuple[str, list[np.ndarray]]], count: int = 5) -> None:
  """Frames 0 .. n-1 at `count` even steps (columns) of each labelled frame list (rows), as a PNG."""
  from PIL import ImageDraw  # pylint: disable=g-import-not-at-top

  n = len(rows[0][1])
  picks = np.linspace(0, n - 1, count).round().astype(int)
  h, w = rows[0][1][0].shape[:2]
  label = 70
  strip = Image.new("RGB", (label + count * (w + 2), len(rows) * (h + 2)), "white")
  draw = ImageDraw.Draw(strip)
  for r, (name, frames) in enumerate(rows):
    draw.text((4, r * (h + 2) + h // 2), name, fill="black")
    for c, t in enumerate(picks):
      strip.paste(Image.fromarray(frames[t]), (label + c * (w + 2), r * (h + 2)))
  strip.save(path)


def encode_colors(path: str, frames) -> None:
  """Color frames through colorize's own default (lossy) encoder, as a video segment."""
  h, w = frames[0].shape[:2]
  info = video_io.VideoInfo(path, "mp4", w, h, RATE, TIME_BASE, len(frames), 0.0, 0, 0, 0)
  writer = video_io.SegmentWriter(path, info)
  for i, rgb in enumerate(frames):
    writer.write(rgb, i * 1001)
  writer.close()


def codec_floor(name: str, src: str, truth, flows, tmp: str) -> dict:
  """E_warp_excess of the true colors themselves, and of them through colorize's default encoder:
  what a perfectly consistent colorization scores as frames, and as a file."""
  path = os.path.join(tmp, f"{name}_truth.nut")
  encode_colors(path, truth)
  score = lambda frames: video_metrics.evaluate(frames, _decode(src), truth, flows)["E_warp_excess"]  # noqa: E731
  with av.open(path) as container:  # a segment (nut): not a container colorize reads
    coded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  return {"clip": name, "truth_excess": score(list(truth)), "truth_file_excess": score(coded)}


_KEYS = ("E_warp", "E_warp_gray", "E_warp_excess", "cdc", "colorfulness", "psnr", "ssim")


def score_mode(colorizer, name, src, truth, flows, mode, tmp) -> tuple[dict, list]:
  """A clip colorized in one mode: its metrics on the frames as colorized (a lossless file), those
  of the file colorize writes by default (lossy H.264), and the lossless frames (for the strip)."""
  row = {"clip": name, "temporal": mode}
  for lossless in (True, False):
    dst = os.path.join(tmp, f"{name}_{mode}_{int(lossless)}.mp4")
    result = video.colorize_video(
      colorizer, src, dst, temporal=mode, lossless=lossless, progress=False
    )
    out = list(_decode(dst))
    exact = video_metrics.evaluate(out, _decode(src), truth, flows)
    if lossless:
      frames = out
      row.update({k: exact[k] for k in _KEYS})
      row["E_warp_dis"] = video_metrics.evaluate(frames, _decode(src))["E_warp"]
    else:
      row.update(file_E_warp_excess=exact["E_warp_excess"], file_cdc=exact["cdc"])
      row.update(file_psnr=exact["psnr"], frames_per_s=result.frames / result.seconds)
  return row, frames


def main(argv):
  del argv
  if FLAGS.memory_run:
    return _memory_run(FLAGS.memory_run)
  colorizer = colorize.Colorizer.from_checkpoint(FLAGS.workdir, batch_size=FLAGS.batch_size)
  h, w, n = FLAGS.height, FLAGS.height * 4 // 3, FLAGS.frames
  rows, strip_rows, floors = [], [], []
  with tempfile.TemporaryDirectory() as tmp:
    for name, make in (("pan", pan), ("zoom", zoom), ("object", moving_object)):
      truth, flows = make(n, h, w)
      src = os.path.join(tmp, f"{name}.mp4")
      write(src, truth)
      floors.append(codec_floor(name, src, truth, flows, tmp))
      print(json.dumps(floors[-1]), flush=True)
      if name == "object":
        gray = [
          photo_lib.compose(photo_lib.lightness(f), np.zeros(f.shape[:2] + (2,), np.float32))
          for f in _decode(src)
        ]
        strip_rows.append(("input (L)", gray))
      for mode in FLAGS.temporal:
        if mode == "hints" and not colorizer.takes_hints:
          continue
        row, frames = score_mode(colorizer, name, src, truth, flows, mode, tmp)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if name == "object":
          strip_rows.append((mode, frames))
      if name == "object":
        strip_rows.append(("truth", list(truth)))
  if FLAGS.strip:
    save_strip(FLAGS.strip, strip_rows)
  summary = {
    "codec_floor": {k: float(np.mean([f[k] for f in floors])) for k in floors[0] if k != "clip"}
  }
  for mode in FLAGS.temporal:
    mine = [r for r in rows if r["temporal"] == mode]
    if mine:
      summary[mode] = {
        k: float(np.mean([r[k] for r in mine])) for k in mine[0] if k not in ("clip", "temporal")
      }
  for count in FLAGS.memory_frames:
    child = subprocess.run(
      [sys.executable, __file__, f"--workdir={FLAGS.workdir}", f"--memory_run={count}"],
      capture_output=True,
      text=True,
      check=True,
    )
    summary[f"memory_{count}"] = json.loads(child.stdout.strip().splitlines()[-1])
  print(json.dumps(summary))


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
