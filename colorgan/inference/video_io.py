"""Video files in and out with PyAV (FFmpeg and its codecs inside the wheel; no system ffmpeg).

Reading: `probe` opens the container (never trusting the extension alone) and `read_frames` streams
the frames in presentation order with their own timestamps, so memory does not grow with the video.
Writing is split in two so that a long video can stop and resume: `SegmentWriter` encodes a run of
frames into a file of its own (each segment starts with a keyframe, has no B-frames, and keeps the
input's timestamps), and `assemble` remuxes the segments' packets - no re-encoding - together with the
input's audio streams, copied packet for packet, into the final file, interleaved by time.
"""

import dataclasses
import fractions
import heapq
import os
from typing import Iterator, NamedTuple

import av
import numpy as np

from colorgan import errors
from colorgan import fileio

# Demuxer name (FFmpeg's, split at commas) -> our container name; the extension only tells mp4 from
# mov and webm from mkv, both of which share a demuxer.
_DEMUXERS = {"mov": "mp4", "mp4": "mp4", "matroska": "matroska", "webm": "matroska", "avi": "avi"}
# container -> (muxer, the extensions it is written with; the first one is the default)
CONTAINERS = {
  "mp4": ("mp4", (".mp4", ".m4v")),
  "mov": ("mov", (".mov", ".qt")),
  "matroska": ("matroska", (".mkv",)),
  "webm": ("webm", (".webm",)),
  "avi": ("avi", (".avi",)),
}
VIDEO_EXTENSIONS = tuple(ext for _, exts in CONTAINERS.values() for ext in exts)
# Written into every output's container metadata, so that a rerun can recognize colorgan's outputs.
OUTPUT_MARKER = "colorgan"
# Near-transparent quality (the colors are the product) at a preset that keeps encoding cheaper than
# colorizing; no B-frames, so that segments concatenate with monotonic timestamps.
_X264_OPTIONS = {"crf": "16", "preset": "medium", "bf": "0"}
_VP9_OPTIONS = {"crf": "24", "b": "0", "cpu-used": "4", "row-mt": "1", "deadline": "good"}
# container -> the audio codec (and options) for an input audio stream the container cannot take
_AUDIO_FALLBACK = {
  "mp4": ("alac", {}),
  "mov": ("alac", {}),
  "matroska": ("flac", {}),
  "avi": ("pcm_s16le", {}),
  "webm": ("libopus", {"b": "256000"}),
}


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What a video file holds, from its headers."""

  path: str
  container: str  # a key of CONTAINERS
  width: int  # stored frame size (before the rotation a player applies)
  height: int
  rate: fractions.Fraction  # the exact average frame rate, e.g. 30000/1001
  time_base: fractions.Fraction
  frames: int  # from the header (exact in mp4/mov, a tick count in avi); 0: not said (mkv, webm)
  duration: float  # seconds; 0.0 when unknown
  rotation: int  # counter-clockwise degrees a player turns the frames by (0, 90, 180, 270)
  audio_streams: int
  dropped_streams: int  # subtitle and data streams, which are not copied


class Frame(NamedTuple):
  index: int
  pts: int  # in VideoInfo.time_base
  rgb: np.ndarray  # uint8 [H, W, 3], stored orientation


def _container(path: str, demuxer: str, metadata: dict) -> str | None:
  names = [_DEMUXERS.get(name) for name in demuxer.split(",")]
  kind = next((name for name in names if name), None)
  ext = os.path.splitext(path)[1].lower()
  if kind == "mp4" and (ext in CONTAINERS["mov"][1] or metadata.get("major_brand") == "qt  "):
    return "mov"
  if kind == "matroska" and ext == ".webm":
    return "webm"
  return kind


def probe(path: str) -> VideoInfo | None:
  """The video in `path`, or None when it is not a video of a supported container (a photo, a text,
  an unreadable file). Reads headers only."""
  try:
    with av.open(path, metadata_errors="ignore") as container:
      kind = _container(path, container.format.name, dict(container.metadata))
      if kind is None or not container.streams.video:
        return None
      stream = container.streams.video[0]
      rate = stream.average_rate or stream.base_rate or stream.guessed_rate
      duration = (
        float(stream.duration * stream.time_base)
        if stream.duration
        else (container.duration or 0) / av.time_base
      )
      rotation = 0
      for frame in container.decode(stream):  # the display matrix reaches the decoded frames
        rotation = int(round(frame.rotation)) % 360
        break
      return VideoInfo(
        path=path,
        container=kind,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        rate=fractions.Fraction(rate or 25),
        time_base=fractions.Fraction(stream.time_base),
        frames=int(stream.frames or 0),
        duration=duration,
        rotation=rotation,
        audio_streams=len(container.streams.audio),
        dropped_streams=len(container.streams) - 1 - len(container.streams.audio),
      )
  except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError, IndexError):
    return None


def is_video(path: str) -> bool:
  """Whether `path` is a video colorize can read (the container is probed, not the extension)."""
  return os.path.isfile(path) and probe(path) is not None


def output_extension(info: VideoInfo) -> str:
  """The output's extension: the input's own when it names the container, else the container's."""
  ext = os.path.splitext(info.path)[1].lower()
  return ext if ext in CONTAINERS[info.container][1] else CONTAINERS[info.container][1][0]


def is_colorgan_video(path: str) -> bool:
  """Whether `path` is a video colorgan wrote (OUTPUT_MARKER in its container metadata)."""
  try:
    with av.open(path, metadata_errors="ignore") as container:
      tags = {key.lower(): value for key, value in container.metadata.items()}
  except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
    return False
  return str(tags.get("comment", "")).startswith(OUTPUT_MARKER)


def read_frames(info: VideoInfo, start: int = 0) -> Iterator[Frame]:
  """The frames of `info.path` from index `start` on, in presentation order, decoded one at a time.

  A frame without a timestamp (some AVI files) gets the previous one plus a frame period.

  Raises:
    errors.VideoError: the stream is damaged (one line naming the file and the frame).
  """
  index, last_pts = 0, None
  step = max(1, round(1 / (info.rate * info.time_base)))  # one frame period in time_base units
  try:
    with av.open(info.path, metadata_errors="ignore") as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      for frame in container.decode(stream):
        pts = frame.pts if frame.pts is not None else (0 if last_pts is None else last_pts + step)
        last_pts = pts
        if index >= start:
          yield Frame(index, pts, frame.to_ndarray(format="rgb24"))
        index += 1
  except av.FFmpegError as e:
    raise errors.VideoError(
      f"{info.path}: damaged video data near frame {index} ("
      f"{' '.join(str(e).split())}): repair or re-encode it"
    ) from None


def check_complete(info: VideoInfo, frames: int, last_pts: int | None) -> None:
  """Raises errors.VideoError when fewer frames were decoded than the headers announce."""
  if frames == 0:
    raise errors.VideoError(f"{info.path}: no frame could be decoded (corrupt or truncated video)")
  # Only mp4/mov headers count the frames themselves (AVI's count is of its time base's ticks).
  if info.container in ("mp4", "mov") and info.frames and frames < info.frames:
    raise errors.VideoError(
      f"{info.path}: truncated or damaged: {frames} of its {info.frames} frames could be decoded"
    )
  if info.duration and last_pts is not None:
    end = float((last_pts + 1) * info.time_base)  # the last frame's start, plus a tick
    # Headers' durations are loose (the last frame's length, audio longer than video): a margin.
    if end + max(2 / float(info.rate), 0.25, 0.05 * info.duration) < info.duration:
      raise errors.VideoError(
        f"{info.path}: truncated or damaged: frames stop at {end:.2f} s of "
        f"its {info.duration:.2f} s"
      )


def _encoder(info: VideoInfo, lossless: bool = False) -> tuple[str, str, dict[str, str]]:
  """(codec, pixel format, options) for the output container. Lossless keeps RGB (no 4:2:0 chroma,
  no quantization): what a player shows is exactly what was colorized."""
  if lossless:
    if info.container == "webm":
      return "libvpx-vp9", "gbrp", {"lossless": "1", "cpu-used": "4", "row-mt": "1"}
    return "libx264rgb", "rgb24", {"qp": "0", "preset": "medium", "bf": "0"}
  if info.container == "webm":
    return "libvpx-vp9", "yuv420p", dict(_VP9_OPTIONS)
  # 4:2:0 needs even sides in x264; odd-sized frames keep their size in 4:4:4 instead.
  odd = info.width % 2 or info.height % 2
  return "libx264", "yuv444p" if odd else "yuv420p", dict(_X264_OPTIONS)


class SegmentWriter:
  """Encodes frames into one segment file (the output's container and codec, video only)."""

  def __init__(self, path: str, info: VideoInfo, lossless: bool = False):
    codec, pix_fmt, options = _encoder(info, lossless)
    self._container = av.open(path, "w", format="nut")
    self._stream = self._container.add_stream(codec, rate=info.rate, options=options)
    self._stream.width, self._stream.height, self._stream.pix_fmt = info.width, info.height, pix_fmt
    self._stream.codec_context.time_base = self._stream.time_base = info.time_base
    self._stream.codec_context.thread_count = 2  # fixed: the same bytes on any machine
    if info.rotation:
      self._stream.set_display_rotation(info.rotation)
    self._time_base = info.time_base

  def write(self, rgb: np.ndarray, pts: int) -> None:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame.pts, frame.time_base = pts, self._time_base
    self._container.mux(self._stream.encode(frame))

  def close(self) -> None:
    self._container.mux(self._stream.encode(None))
    self._container.close()

  def abort(self) -> None:
    try:
      self._container.close()
    except av.FFmpegError:
      pass


def _packets(container, streams) -> Iterator[tuple[float, int, object]]:
  """(time in s, tie-breaker, packet) of the streams, in file order; flush packets left out."""
  last = 0.0
  for packet in container.demux(streams):
    if packet.size == 0:
      continue
    ts = packet.dts if packet.dts is not None else packet.pts
    last = float(ts * packet.time_base) if ts is not None else last
    yield last, packet.stream.index, packet


def _segment_packets(paths: list[str], out_stream) -> Iterator[tuple[float, int, object]]:
  for path in paths:
    with av.open(path) as segment:
      for key, _, packet in _packets(segment, segment.streams.video):
        packet.stream = out_stream
        yield key, 0, packet


def assemble(segments: list[str], info: VideoInfo, dst: str) -> None:
  """Remuxes the segments' video and the input's audio into `dst`, written atomically.

  Packets are merged by time (a heap over two streams of packets), so memory stays constant.
  """
  with (
    fileio.atomic_path(dst) as tmp,
    av.open(segments[0]) as first,
    av.open(info.path, metadata_errors="ignore") as source,
  ):
    with av.open(tmp, "w", format=CONTAINERS[info.container][0]) as out:
      for key, value in source.metadata.items():
        if key not in ("encoder", "major_brand", "minor_version", "compatible_brands"):
          out.metadata[key] = value
      out.metadata["comment"] = OUTPUT_MARKER
      video = out.add_stream_from_template(first.streams.video[0])
      # The segments (NUT files) keep neither the rate, the time base nor the display matrix.
      video.codec_context.framerate = info.rate
      video.time_base = video.codec_context.time_base = info.time_base
      if info.rotation:
        video.set_display_rotation(info.rotation)
      audio = {s.index: _audio_stream(out, s, info) for s in source.streams.audio}
      streams = [_segment_packets(segments, video)]
      if audio:
        streams.append(_audio_packets(_packets(source, list(source.streams.audio)), audio))
      for _, _, packet in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        out.mux(packet)


class _Reencoded(NamedTuple):
  stream: object  # the output stream
  resampler: av.AudioResampler


def _audio_stream(out, source_stream, info: VideoInfo):
  """The output stream of an input audio stream: a packet-for-packet copy where the container takes
  its codec, else (e.g. AAC in a file named .webm) a _Reencoded one, lossless where the container
  has a lossless codec (ALAC, FLAC, PCM) and Opus at 256 kbit/s in webm."""
  try:
    return out.add_stream_from_template(source_stream)
  except ValueError:  # PyAV: "'webm' format does not support 'aac' codec"
    pass
  codec, options = _AUDIO_FALLBACK[info.container]
  rate = 48000 if codec == "libopus" else source_stream.rate  # Opus codes 48 kHz only
  stream = out.add_stream(codec, rate=rate, options=dict(options))
  opus_surround = codec == "libopus" and source_stream.channels > 2
  stream.layout = "stereo" if opus_surround else source_stream.layout.name
  context = stream.codec_context
  return _Reencoded(stream, av.AudioResampler(context.format.name, stream.layout.name, rate))


def _audio_packets(packets, out_streams: dict) -> Iterator[tuple[float, int, object]]:
  """The input's audio packets, each pointed at its output stream, or decoded and encoded again
  (timestamps kept: the resampler and encoder carry the frames' pts)."""
  for key, index, packet in packets:
    target = out_streams[index]
    if not isinstance(target, _Reencoded):
      packet.stream = target
      yield key, 1 + index, packet
      continue
    for frame in packet.decode():
      for resampled in target.resampler.resample(frame):
        for out_packet in target.stream.encode(resampled):
          yield key, 1 + index, out_packet
  for index, target in out_streams.items():
    if isinstance(target, _Reencoded):
      flushed = [p for f in target.resampler.resample(None) for p in target.stream.encode(f)]
      for out_packet in flushed + list(target.stream.encode(None)):
        yield float("inf"), 1 + index, out_packet
