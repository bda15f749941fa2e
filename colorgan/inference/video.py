"""Colorize videos (`--mode=colorize` on a video file): streamed, resumable, temporally consistent.

Each frame goes through the photo path (colorgan.inference.photo: the generator sees the whole frame at
its size, its ab is upsampled and joined with the frame's own full-resolution L), in batches; the
temporal filter (video_temporal: none, ema or hints) works between the prediction and the composition.
Frames are turned as a player shows them (the container's rotation) for the generator, and back.

Output: `dst` in the input's container (H.264, or VP9 in webm; lossless on request), with the input's
frame count, exact frame rate, every frame's timestamp (variable frame rate too), size and rotation,
and its audio streams (copied packet for packet where the container takes them). Safety: the work
goes into a hidden folder beside `dst`, `.<name>.partial/`, one segment of `segment_frames` frames at
a time (each with the filter's state at its end); only when every frame is done are the segments
remuxed into `dst` (atomically) and the folder removed. An interrupted run leaves the folder, never a
file that looks finished; `resume=True` continues after its last complete segment and gives the same
file as one uninterrupted run.
"""

import concurrent.futures
import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Iterator

from absl import logging
import numpy as np
import tqdm

from colorgan import errors
from colorgan import fileio
from colorgan.inference import photo as photo_lib
from colorgan.inference import user_hints
from colorgan.inference import video_flow
from colorgan.inference import video_io
from colorgan.inference import video_temporal

TEMPORAL_MODES = video_temporal.MODES
SEGMENT_FRAMES = (
  256  # rounded up to a multiple of the batch size; a resumed run redoes < one segment
)
_FORMAT_VERSION = 2  # of the partial folder; a change makes --resume start over

is_video = video_io.is_video
is_colorgan_video = video_io.is_colorgan_video
_NONE = concurrent.futures.Future()  # the motion of a frame the filter does not carry into
_NONE.set_result(None)


def output_path(photo_output: str, source: str) -> str:
  """Where a video goes: the plan's output path (photo.plan names it <stem>.png) with the
  extension of the video's container (the input's own, e.g. .mov, .mkv)."""
  info = video_io.probe(source)
  if info is None:
    raise errors.VideoError(f"{source}: not a video colorgan can read")
  return os.path.splitext(photo_output)[0] + video_io.output_extension(info)


@dataclasses.dataclass
class Result:
  """What colorize_video did (for the command's summary line)."""

  path: str
  frames: int
  resumed_from: int  # frames taken from an earlier interrupted run
  scene_cuts: int
  seconds: float


# ----------------------------------------------------------------------------- the partial folder
def _partial_dir(dst: str) -> str:
  folder, name = os.path.split(os.path.abspath(dst))
  return os.path.join(folder, f".{name}.partial")


def _segment_path(partial: str, k: int) -> str:
  return os.path.join(partial, f"segment_{k:06d}.nut")


def _state_path(partial: str, k: int) -> str:
  return os.path.join(partial, f"segment_{k:06d}.npz")


def _settings(
  colorizer, src: str, temporal: str, hints: str | None, segment: int, lossless
) -> dict:
  """Everything an output depends on: a resumed run must match it to reuse the segments."""
  stat = os.stat(src)
  hint_stat = os.stat(hints) if hints else None
  return {
    "version": _FORMAT_VERSION,
    "source": os.path.abspath(src),
    "source_size": stat.st_size,
    "source_mtime_ns": stat.st_mtime_ns,
    "temporal": temporal,
    "hints": [os.path.abspath(hints), hint_stat.st_size, hint_stat.st_mtime_ns] if hints else None,
    "step": int(colorizer.step),
    "size": int(colorizer.size),
    "squash": bool(colorizer.squash),
    "segment_frames": segment,
    "work_side": video_temporal.WORK_SIDE,
    "lossless": bool(lossless),
  }


def _open_partial(partial: str, settings: dict, resume: bool) -> tuple[int, dict]:
  """(complete segments to keep, the last one's saved state) in a fresh or resumed folder."""
  meta = os.path.join(partial, "settings.json")
  if os.path.isdir(partial):
    if resume:
      try:
        with open(meta, encoding="utf-8") as f:
          earlier = json.load(f)
      except (OSError, ValueError):
        earlier = None
      if earlier != settings:
        changed = sorted(k for k in settings if not earlier or earlier.get(k) != settings[k])
        raise errors.VideoError(
          f"--resume: the partial output {partial} was made with other settings "
          f"({', '.join(changed) or 'unreadable'}): rerun without --resume to start over"
        )
      done = 0
      while os.path.exists(_state_path(partial, done)):
        done += 1
      state = dict(np.load(_state_path(partial, done - 1))) if done else {}
      return done, state
    logging.info(
      "Starting %s over (an earlier run was interrupted; --resume continues it)", partial
    )
    shutil.rmtree(partial)
  os.makedirs(partial)
  fileio.write_text(meta, json.dumps(settings, indent=1))
  return 0, {}


# ----------------------------------------------------------------------------- frames
class _Video:
  """One video's colorization: the colorizer, the temporal filter and the frame geometry."""

  def __init__(
    self,
    colorizer,
    info: video_io.VideoInfo,
    temporal: str,
    keyframes: dict[int, user_hints.UserHints],
    state: dict,
    lossless: bool = False,
  ):
    self.colorizer = colorizer
    self.info = info
    self.turns = info.rotation // 90  # quarter turns counter-clockwise, as a player shows it
    shown = (info.width, info.height) if self.turns % 2 else (info.height, info.width)
    self.height, self.width = shown
    self.work = video_temporal.work_shape(*shown)
    self.content = photo_lib.content_size(*shown, colorizer.size, colorizer.squash)
    self.filter = video_temporal.TemporalFilter(temporal, video_temporal.State.from_arrays(state))
    self.keyframes, self.lossless = keyframes, lossless
    self.pool = concurrent.futures.ThreadPoolExecutor(max(1, min(4, colorizer.workers)))

  def _user_hints(self, frames: list[video_io.Frame]) -> np.ndarray | None:
    """The batch's hint maps [B, S, S, 3] from the keyframe file (zeros elsewhere); None for a
    generator trained without hints."""
    if not self.colorizer.takes_hints:
      return None
    size = self.colorizer.size
    grids = np.zeros((len(frames), size, size, 3), np.float32)
    for i, frame in enumerate(frames):
      if frame.index in self.keyframes:
        grids[i] = photo_lib.model_hints(
          self.keyframes[frame.index], self.height, self.width, size, self.colorizer.squash
        )
    return grids

  def _motions(self, ls: list[np.ndarray]) -> list[concurrent.futures.Future]:
    """Futures of each frame's video_temporal.Motion from the frame before it (None where the
    filter will not use it): only the frames' L is needed, so they run while the generator does."""
    prev = [self.filter.state.l if self.filter.state else None] + ls[:-1]
    return [
      self.pool.submit(self._motion, a, b) if self.filter.mode != "none" else _NONE
      for a, b in zip(prev, ls)
    ]

  @staticmethod
  def _motion(prev_l: np.ndarray | None, l: np.ndarray):
    if prev_l is None or prev_l.shape != l.shape:
      return None  # the filter has nothing to carry: it does not look at the motion
    return video_temporal.estimate_motion(prev_l, l)

  def _prepare(self, frame: video_io.Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(full-resolution L as shown, its work-size L, the generator's input)."""
    l = photo_lib.lightness(np.rot90(frame.rgb, self.turns))
    l_work = video_flow.resize(l, *self.work)
    return l, l_work, photo_lib.model_input(l, self.colorizer.size, self.colorizer.squash)

  def _finish(self, l: np.ndarray, ab_work: np.ndarray) -> np.ndarray:
    ab = video_flow.resize(ab_work, self.height, self.width)
    return np.ascontiguousarray(np.rot90(photo_lib.compose(l, ab), -self.turns))

  def colorize(self, frames: list[video_io.Frame]) -> list[np.ndarray]:
    """A batch of consecutive frames -> their colorized RGB (stored orientation), in order.

    The generator colorizes the batch (with the keyframe hints, if any) and the filter carries the
    colors along the flow into its state (none: the prediction itself). In hints mode the generator
    colorizes the batch again with the state's confidently carried colors as hint points, and that is
    shown; the state never takes a hinted output, so colors cannot feed on themselves (a generator
    trained on true-color hints answers a hint with more color than it had).
    """
    prepared = list(self.pool.map(self._prepare, frames))
    motions = self._motions([p[1] for p in prepared])  # in the pool, beside the generator
    inputs, user = np.stack([p[2] for p in prepared]), self._user_hints(frames)
    outputs, carried = [], []
    for (_, l_work, _), ab, motion in zip(
      prepared, self.colorizer.predict_ab(inputs, user), motions
    ):
      carried.append(self.filter.carry(l_work, motion.result()))
      ab_work = photo_lib.upsample_ab(ab, *self.work, self.colorizer.squash)
      outputs.append(self.filter.blend(l_work, ab_work, carried[-1]))
    if self.filter.mode == "hints":
      for i, (ab, c) in enumerate(zip(outputs, carried)):
        if c is not None:
          state = video_temporal.Carried(ab, c.confidence)
          grid = video_temporal.hint_map(state, self.content, self.colorizer.size)
          user[i] = np.where(user[i, ..., 2:] > 0, user[i], grid)  # the user's hints win
      abs_ = self.colorizer.predict_ab(inputs, user)
      outputs = [photo_lib.upsample_ab(ab, *self.work, self.colorizer.squash) for ab in abs_]
    return list(self.pool.map(self._finish, [p[0] for p in prepared], outputs))


def _batches(frames: Iterator[video_io.Frame], size: int) -> Iterator[list[video_io.Frame]]:
  batch = []
  for frame in frames:
    batch.append(frame)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def _save_state(partial: str, k: int, video: _Video, end: int, last_pts: int) -> None:
  """Segment k is complete once its state (the filter's, and where it ended) is written."""
  arrays = dict(video.filter.state.to_arrays()) if video.filter.state else {}
  arrays.update(end=np.int64(end), last_pts=np.int64(last_pts), cuts=np.int64(video.filter.cuts))
  with fileio.atomic_path(_state_path(partial, k)) as tmp, open(tmp, "wb") as f:
    np.savez(f, **arrays)


def _encode(
  video: _Video, partial: str, segment: int, done: int, state: dict, bar: tqdm.tqdm
) -> tuple[int, int | None, int]:
  """Colorizes and encodes the frames after the `done` complete segments, one segment file at a
  time. Returns (frames decoded in all, the last one's timestamp, segments written in all)."""
  count = int(state.get("end", 0))
  last_pts = int(state["last_pts"]) if "last_pts" in state else None
  k, writer, tmp = done, None, None
  for batch in _batches(
    video_io.read_frames(video.info, done * segment), video.colorizer.batch_size
  ):
    for frame, rgb in zip(batch, video.colorize(batch)):
      if writer is None:
        tmp = _segment_path(partial, k) + ".tmp"
        writer = video_io.SegmentWriter(tmp, video.info, video.lossless)
      writer.write(rgb, frame.pts)
      count, last_pts = frame.index + 1, frame.pts
    bar.update(len(batch))
    if count % segment == 0:  # batches never straddle segments: segment % batch size == 0
      writer.close()
      os.replace(tmp, _segment_path(partial, k))
      _save_state(partial, k, video, count, last_pts)
      k, writer = k + 1, None
  if writer is not None:
    writer.close()
    os.replace(tmp, _segment_path(partial, k))
    _save_state(partial, k, video, count, last_pts)
    k += 1
  return count, last_pts, k


def _probe_for(colorizer, src: str, temporal: str, hints: str | None) -> video_io.VideoInfo:
  """src's probe, checked before any work: a known temporal mode, a readable video, and a
  generator trained with hints where hints are asked for (errors.VideoError otherwise)."""
  if temporal not in TEMPORAL_MODES:
    raise errors.VideoError(f"--temporal={temporal} is not known: use {', '.join(TEMPORAL_MODES)}")
  info = video_io.probe(src)
  if info is None:
    raise errors.VideoError(
      f"{src}: not a video colorgan can read (corrupt, truncated, or not a "
      "video; mp4, mov, mkv, webm and avi are read)"
    )
  if (temporal == "hints" or hints) and not colorizer.takes_hints:
    what = "--temporal=hints" if temporal == "hints" else f"--hints={hints}"
    raise errors.VideoError(
      f"{what} needs a generator trained with hints (configs/hints.py); this "
      f"one (step {colorizer.step}) was trained without"
    )
  return info


def colorize_video(
  colorizer,
  src: str,
  dst: str,
  *,
  temporal: str = "ema",
  hints: str | None = None,
  resume: bool = False,
  lossless: bool = False,
  progress: bool = True,
  segment_frames: int = SEGMENT_FRAMES,
) -> Result:
  """Colorizes the video `src` into `dst` (see the module docstring).

  Args:
    colorizer: a colorgan.inference.colorize.Colorizer (its size, batch size and hint support).
    src: the input video (any container video_io reads; gray or color: only its lightness is used).
    dst: the output file (output_path gives the plan's name with the container's extension).
    temporal: "none" (frame by frame), "ema" (colors carried along the flow) or "hints" (carried
      colors given to a generator trained with hints).
    hints: a keyframe hint file (user_hints.read_keyframe_hints), for a generator trained with hints.
    resume: continue an interrupted run of the same settings from its partial folder.
    lossless: encode every frame exactly (video_io.SegmentWriter), in a much larger file.
    progress: show a progress bar (frames/s, time left) on stderr.
    segment_frames: frames per segment (the unit of --resume).

  Raises:
    errors.VideoError: src is not a readable video, is damaged or truncated, or the settings do not
      suit the generator; nothing is left at dst.
    errors.HintError: the hint file cannot be used.
  """
  info = _probe_for(colorizer, src, temporal, hints)
  shown = (info.width, info.height) if info.rotation % 180 else (info.height, info.width)
  keyframes = user_hints.read_keyframe_hints(hints, *shown, info.frames) if hints else {}
  segment = -(-segment_frames // colorizer.batch_size) * colorizer.batch_size
  partial = _partial_dir(dst)
  settings = _settings(colorizer, src, temporal, hints, segment, lossless)
  done, state = _open_partial(partial, settings, resume)
  if info.dropped_streams:
    logging.warning("%s: %d subtitle/data stream(s) are not copied", src, info.dropped_streams)
  video = _Video(colorizer, info, temporal, keyframes, state, lossless)
  video.filter.cuts = int(state.get("cuts", 0))
  started = time.monotonic()
  total = info.frames or round(info.duration * info.rate) or None
  bar = tqdm.tqdm(
    total=total,
    initial=done * segment,
    unit="frame",
    file=sys.stderr,
    desc=os.path.basename(src),
    disable=not progress,
    dynamic_ncols=True,
  )
  try:
    count, last_pts, segments = _encode(video, partial, segment, done, state, bar)
    video_io.check_complete(info, count, last_pts)
    bar.total = count  # the header's count may have been an estimate
    video_io.assemble([_segment_path(partial, k) for k in range(segments)], info, dst)
  except errors.VideoError:  # damaged input: resuming would meet the same damage
    shutil.rmtree(partial, ignore_errors=True)
    raise
  except BaseException:  # Ctrl-C or a failure: the segments stay for --resume, dst is not written
    tqdm.tqdm.write(
      f"colorgan: {src}: stopped; the frames done so far are kept in {partial}: "
      "rerun with --resume to continue",
      file=sys.stderr,
    )
    raise
  finally:
    bar.close()
    video.pool.shutdown()
  shutil.rmtree(partial)
  return Result(dst, count, done * segment, video.filter.cuts, time.monotonic() - started)


# Photos are recognized by their extension and go to the photo path; any other file is probed.
_PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def split_plan(work: photo_lib.Plan) -> tuple[photo_lib.Plan, list[photo_lib.Job]]:
  """(the plan's photos, its videos with their outputs in the video's container).

  Videos colorgan wrote (a rerun into an input folder) are dropped, as photo.plan drops its photos.

  Raises:
    errors.PlanError: a video's output would overwrite an input.
  """
  photos, videos = [], []
  inputs = {os.path.realpath(job.source) for job in work.jobs}
  for job in work.jobs:
    if job.source.lower().endswith(_PHOTO_EXTENSIONS) or not is_video(job.source):
      photos.append(job)
    elif not is_colorgan_video(job.source):
      videos.append(photo_lib.Job(job.source, output_path(job.output, job.source)))
  for job in videos:
    if os.path.realpath(job.output) in inputs:
      raise errors.PlanError(
        f"--output_dir={work.output_dir} would overwrite the input "
        f"{job.output}: choose an output folder that is not an input's folder"
      )
  return work._replace(jobs=photos), videos


def run(
  colorizer,
  jobs: list[photo_lib.Job],
  *,
  temporal: str,
  hints: str | None,
  resume: bool,
  lossless: bool = False,
) -> int:
  """Colorizes each video job; a video that cannot be read is one line and the others go on.

  Returns:
    The number of videos that failed.
  """
  if hints is not None and len(jobs) != 1:
    raise errors.HintError(
      f'--hints={hints}: for videos, a keyframe file ({{"frames": {{"0": '
      '{"points": [...]}}}}) goes with one video --input at a time'
    )
  failures = 0
  for job in jobs:
    try:
      result = colorize_video(
        colorizer,
        job.source,
        job.output,
        temporal=temporal,
        hints=hints,
        resume=resume,
        lossless=lossless,
      )
    except errors.VideoError as e:
      tqdm.tqdm.write(f"colorgan: error: {e}", file=sys.stderr)
      failures += 1
      continue
    resumed = (
      f", {result.resumed_from} taken from the interrupted run" if result.resumed_from else ""
    )
    logging.info(
      "Wrote %s: %d frames in %.1f s (temporal=%s, %d scene cut(s)%s)",
      result.path,
      result.frames,
      result.seconds,
      temporal,
      result.scene_cuts,
      resumed,
    )
  return failures
