"""Video colorization (colorgan.inference.video): clips built here, in every container and corner."""

import fractions
import json
import os

import av
import numpy as np
import pytest

from colorgan import errors
from colorgan.inference import photo as photo_lib
from colorgan.inference import video
from colorgan.inference import video_flow
from colorgan.inference import video_temporal
from tests.conftest import tiny_config

NTSC = fractions.Fraction(30000, 1001)


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
  """A smooth random color image, uint8 [H, W, 3]: something optical flow can follow."""
  rng = np.random.default_rng(seed)
  small = rng.uniform(0, 255, (height // 4 + 2, width // 4 + 2, 3))
  ys = np.linspace(0, small.shape[0] - 1.001, height)
  xs = np.linspace(0, small.shape[1] - 1.001, width)
  y0, x0 = ys.astype(int)[:, None], xs.astype(int)[None, :]
  fy, fx = (ys - y0[:, 0])[:, None, None], (xs - x0[0])[None, :, None]
  image = (
    (1 - fy) * (1 - fx) * small[y0, x0]
    + (1 - fy) * fx * small[y0, x0 + 1]
    + fy * (1 - fx) * small[y0 + 1, x0]
    + fy * fx * small[y0 + 1, x0 + 1]
  )
  return image.astype(np.uint8)


def write_clip(
  path: str,
  frames: list[np.ndarray],
  *,
  codec: str = "libx264",
  rate: fractions.Fraction = NTSC,
  pts: list[int] | None = None,
  time_base: fractions.Fraction | None = None,
  audio: str | None = "aac",
  rotation: int = 0,
  container: str | None = None,
) -> None:
  """Writes uint8 RGB frames as a video; pts in time_base (default: one frame period each)."""
  if time_base is None:
    time_base = fractions.Fraction(1, 1000) if pts else fractions.Fraction(1, rate.numerator)
  height, width = frames[0].shape[:2]
  with av.open(path, "w", format=container) as out:
    stream = out.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv444p" if codec == "libx264" and (width % 2 or height % 2) else "yuv420p"
    stream.codec_context.time_base = time_base
    if rotation:
      stream.set_display_rotation(rotation)
    sound = None
    if audio:
      sound = out.add_stream(audio, rate=48000)
      sound.layout = "stereo"
    for i, rgb in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
      frame.pts = pts[i] if pts else round(i / (rate * time_base))
      frame.time_base = time_base
      out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    if sound:
      samples, size = 0, sound.codec_context.frame_size or 960
      total = int(48000 * len(frames) / rate)
      while samples < total:
        tone = np.sin(np.arange(samples, samples + size) * 0.05).astype(np.float32) * 0.1
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, samples
        frame.time_base = fractions.Fraction(1, 48000)
        out.mux(sound.encode(frame))
        samples += size
      out.mux(sound.encode(None))


def moving(n: int, height: int = 40, width: int = 56, dx: int = 1, dy: int = 0) -> list:
  big = texture(height + n * abs(dy) + 8, width + n * abs(dx) + 8)
  return [big[t * dy + 4 : t * dy + 4 + height, t * dx + 4 : t * dx + 4 + width] for t in range(n)]


def decode(path: str) -> tuple[list, list, av.video.stream.VideoStream]:
  """(frames as uint8 RGB, their timestamps in seconds, the stream's facts) of a video."""
  with av.open(path) as container:
    stream = container.streams.video[0]
    frames, times = [], []
    for frame in container.decode(stream):
      frames.append(frame.to_ndarray(format="rgb24"))
      times.append(frame.pts * frame.time_base)
    facts = {
      "rate": stream.average_rate,
      "size": (stream.width, stream.height),
      "audio": [
        (s.codec_context.name, sum(1 for p in container.demux(s) if p.size))
        for s in container.streams.audio
      ],
    }
  with av.open(path) as container:
    facts["rotation"] = next(container.decode(video=0)).rotation
  return frames, times, facts


@pytest.fixture(scope="session")
def video_run(tiny_run) -> str:
  """The workdir of a 1-step tiny run (conftest)."""
  return tiny_run


@pytest.fixture(scope="session")
def colorizer(video_run):
  from colorgan.inference import colorize  # pylint: disable=g-import-not-at-top

  return colorize.Colorizer.from_checkpoint(video_run, batch_size=4)


def test_the_command_colorizes_photos_and_videos_of_one_folder(video_run, tmp_path):
  """--mode=colorize on a folder: photos by the photo path, videos (probed) into their container;
  a rerun into the input folder does not take its own outputs as inputs."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  inputs = tmp_path / "in"
  inputs.mkdir()
  write_clip(str(inputs / "clip.mov"), moving(4), audio=None)
  Image.fromarray(texture(24, 40)).save(inputs / "photo.png")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def colorize(output_dir):
    return subprocess.run(
      [
        sys.executable,
        "-m",
        "colorgan.main",
        "--mode=colorize",
        f"--workdir={video_run}",
        f"--input={inputs}",
        f"--output_dir={output_dir}",
        "--temporal=none",
      ],
      cwd=repo,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )

  result = colorize(tmp_path / "out")
  assert result.returncode == 0, result.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / "out")) == ["clip.mov", "photo.png"]
  frames, _, _ = decode(str(tmp_path / "out" / "clip.mov"))
  assert len(frames) == 4 and frames[0].shape == (40, 56, 3)
  result = colorize(inputs / "colorized")  # below the input folder: its outputs are not inputs
  assert result.returncode == 0, result.stderr[-2000:]
  assert sorted(os.listdir(inputs / "colorized")) == ["clip.mov", "photo.png"]


CLIPS = {  # name: (file, write_clip arguments, frames)
  "h264_aac_ntsc": ("a.mp4", {}, moving(10)),
  "vp9_opus_odd": ("b.webm", {"codec": "libvpx-vp9", "audio": "libopus"}, moving(6, 25, 33)),
  "vfr_no_audio": (
    "c.mkv",
    {"pts": [0, 33, 70, 100, 180, 190, 250, 400], "audio": None},
    moving(8),
  ),
  "rotated_mov": ("d.mov", {"rotation": 90}, moving(6, 40, 24)),
  "one_frame_avi": ("e.avi", {"audio": None}, moving(1)),
  "odd_h264": ("f.mp4", {"audio": None}, moving(5, 21, 35)),
}


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_output_keeps_frames_timing_size_rotation_audio_and_lightness(colorizer, tmp_path, name):
  filename, kwargs, frames = CLIPS[name]
  src = str(tmp_path / filename)
  write_clip(src, frames, **kwargs)
  assert video.is_video(src)
  dst = video.output_path(str(tmp_path / "out" / "x.png"), src)
  assert dst.endswith(os.path.splitext(filename)[1])
  result = video.colorize_video(colorizer, src, dst, temporal="ema", progress=False)
  assert result.frames == len(frames) and video.is_colorgan_video(dst)
  assert not os.path.exists(video._partial_dir(dst))
  want_frames, want_times, want = decode(src)
  got_frames, got_times, got = decode(dst)
  assert len(got_frames) == len(want_frames) and got_times == want_times
  assert got == want  # rate (exact fraction), size, rotation, audio codec and packet count
  l_in = np.stack([photo_lib.lightness(f) for f in want_frames])
  l_out = np.stack([photo_lib.lightness(f) for f in got_frames])
  assert np.abs(l_in - l_out).mean() < 1.5  # lossy video coding only: each frame keeps its L


@pytest.mark.parametrize("name", ["h264_aac_ntsc", "vp9_opus_odd"])
def test_lossless_output_holds_exactly_the_photo_paths_frames(colorizer, tmp_path, name):
  """lossless=True (--video_lossless): each decoded frame is the photo path's colorization of the
  input frame (no chroma subsampling, no quantization), with the timing and audio kept."""
  filename, kwargs, frames = CLIPS[name]
  src, dst = str(tmp_path / filename), str(tmp_path / "out" / filename)
  write_clip(src, frames, **kwargs)
  video.colorize_video(colorizer, src, dst, temporal="none", lossless=True, progress=False)
  want_frames, want_times, want = decode(src)
  got_frames, got_times, got = decode(dst)
  assert got_times == want_times and got == want
  for frame, got_frame in zip(want_frames, got_frames):
    photo = colorizer.colorize_photo(photo_lib.Photo(photo_lib.lightness(frame), None))
    assert np.abs(got_frame.astype(int) - photo).max() <= 1  # batch of 4 vs 1: float rounding


def _audio(path: str) -> tuple[str, float, np.ndarray]:
  """(codec, first timestamp in s, samples [channels, n] float) of a video's first audio stream."""
  with av.open(path) as container:
    stream = container.streams.audio[0]
    frames = list(container.decode(stream))
    samples = np.concatenate([f.to_ndarray().reshape(stream.channels, -1) for f in frames], axis=1)
    return stream.codec_context.name, float(frames[0].pts * frames[0].time_base), samples


def test_audio_the_container_cannot_take_is_encoded_again_in_sync(colorizer, tmp_path):
  """AAC in a file named .webm (a Matroska file): webm takes Opus or Vorbis only, so the audio is
  encoded again (Opus) with its timing: same start, same length, same waveform."""
  src, dst = str(tmp_path / "clip.webm"), str(tmp_path / "out" / "clip.webm")
  write_clip(src, moving(6), codec="libvpx-vp9", audio="aac", container="matroska")
  video.colorize_video(colorizer, src, dst, temporal="none", progress=False)
  codec_in, start_in, want = _audio(src)
  codec_out, start_out, got = _audio(dst)
  assert (codec_in, codec_out) == ("aac", "opus") and start_out == start_in
  assert abs(got.shape[1] - want.shape[1]) < 960  # one Opus frame
  n = min(got.shape[1], want.shape[1])
  assert np.corrcoef(got[0, :n], want[0, :n])[0, 1] > 0.99  # in sync: a shift decorrelates


def test_a_video_is_found_by_its_content_not_its_extension(tmp_path):
  write_clip(str(tmp_path / "clip.dat"), moving(2), audio=None, container="mp4")
  photo_lib.save(str(tmp_path / "photo.mp4"), texture(8, 8), None, "png")
  (tmp_path / "notes.mkv").write_text("not a video")
  assert video.is_video(str(tmp_path / "clip.dat"))
  assert video.output_path(str(tmp_path / "o" / "clip.png"), str(tmp_path / "clip.dat")).endswith(
    "clip.mp4"
  )
  assert not video.is_video(str(tmp_path / "photo.mp4"))
  assert not video.is_video(str(tmp_path / "notes.mkv"))


def test_damaged_videos_are_one_line_and_nothing_looks_finished(colorizer, tmp_path):
  src = str(tmp_path / "clip.mkv")
  write_clip(src, moving(24, 64, 64), audio=None)
  data = open(src, "rb").read()
  (tmp_path / "truncated.mkv").write_bytes(data[: len(data) // 2])
  (tmp_path / "garbage.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + os.urandom(3000))
  (tmp_path / "text.avi").write_text("hello")
  for name in ("truncated.mkv", "garbage.mp4", "text.avi"):
    dst = str(tmp_path / "out" / name)
    with pytest.raises(errors.VideoError) as raised:
      video.colorize_video(colorizer, str(tmp_path / name), dst, progress=False)
    assert "\n" not in str(raised.value) and name in str(raised.value)
    assert not os.path.exists(dst) and not os.path.exists(video._partial_dir(dst))


class _Interrupting:
  """A colorizer that is interrupted (Ctrl-C) at its n-th generator call."""

  def __init__(self, colorizer, calls: int):
    self._colorizer, self._calls = colorizer, calls

  def __getattr__(self, name):
    return getattr(self._colorizer, name)

  def predict_ab(self, *args):
    self._calls -= 1
    if self._calls < 0:
      raise KeyboardInterrupt
    return self._colorizer.predict_ab(*args)


def test_interrupt_then_resume_gives_the_file_of_one_run(colorizer, tmp_path):
  src = str(tmp_path / "clip.mp4")
  write_clip(src, moving(14, dx=2, dy=1))
  whole = str(tmp_path / "whole.mp4")
  video.colorize_video(colorizer, src, whole, segment_frames=4, progress=False)
  dst = str(tmp_path / "resumed.mp4")
  with pytest.raises(KeyboardInterrupt):
    video.colorize_video(_Interrupting(colorizer, 2), src, dst, segment_frames=4, progress=False)
  assert not os.path.exists(dst) and os.path.isdir(video._partial_dir(dst))
  with pytest.raises(errors.VideoError, match="other settings \\(temporal\\)"):
    video.colorize_video(
      colorizer, src, dst, temporal="none", segment_frames=4, resume=True, progress=False
    )
  result = video.colorize_video(colorizer, src, dst, segment_frames=4, resume=True, progress=False)
  assert result.resumed_from == 8
  assert open(dst, "rb").read() == open(whole, "rb").read()


def test_ema_on_a_static_clip_keeps_the_first_frames_colors(colorizer, tmp_path):
  src = str(tmp_path / "still.mp4")
  write_clip(src, [texture(40, 56)] * 6, audio=None)
  for temporal in ("none", "ema"):
    video.colorize_video(
      colorizer, src, str(tmp_path / f"{temporal}.mp4"), temporal=temporal, progress=False
    )
  ema, _, _ = decode(str(tmp_path / "ema.mp4"))
  none, _, _ = decode(str(tmp_path / "none.mp4"))
  for frame in ema:
    assert np.abs(frame.astype(int) - ema[0]).max() <= 3  # video coding noise only
  assert np.abs(ema[0].astype(int) - none[0]).max() <= 3


def test_the_filter_carries_colors_along_the_motion_and_restarts_at_a_cut():
  big = photo_lib.lightness(texture(80, 100))
  l0, l1 = big[10:60, 10:80], big[12:62, 7:77]  # the camera moves 3 px left, 2 px down
  ab0 = np.stack(
    [
      np.linspace(-40, 40, 70)[None, :].repeat(50, 0),
      np.linspace(20, -20, 50)[:, None].repeat(70, 1),
    ],
    axis=-1,
  ).astype(np.float32)
  ema = video_temporal.TemporalFilter("ema")
  ema.step(l0, ab0)
  carried = ema.carry(l1)
  inner = (slice(8, -8), slice(8, -8))
  want = np.zeros_like(ab0)
  want[:-2, 3:] = ab0[2:, :-3]  # frame 1's pixel (y, x) shows frame 0's (y + 2, x - 3)
  assert np.abs(carried.ab[inner] - want[inner]).mean() < 1.0
  assert carried.confidence[inner].mean() > 0.7 * video_temporal.STRENGTH
  out = ema.blend(l1, np.zeros_like(ab0), carried)
  assert np.abs(out - carried.confidence[..., None] * carried.ab).max() < 1e-4
  assert (
    ema.carry(np.full_like(l1, 5.0)) is None and ema.cuts == 1
  )  # another shot: the prediction only
  assert video_temporal.TemporalFilter("none").carry(l1) is None


def test_occlusion_rule_flags_where_the_flows_disagree():
  forward = np.zeros((20, 20, 2), np.float32)
  forward[..., 0] = 2.0
  backward = -forward.copy()
  backward[5:10, 5:10] = 3.0  # the way back does not return here
  mask = video_flow.occluded(backward, forward)
  assert mask[6:9, 6:9].all() and not mask[12:18, 2:10].any()
  assert mask[:, :2].all()  # the flow leaves the frame


@pytest.fixture(scope="session")
def hints_colorizer(tmp_path_factory):
  from colorgan.inference import colorize  # pylint: disable=g-import-not-at-top
  from colorgan.training import loop  # pylint: disable=g-import-not-at-top

  path = str(tmp_path_factory.mktemp("video_hints") / "run")
  loop.train_and_evaluate(
    tiny_config(
      **{"hints.enabled": True, "total_steps": 1, "eval_every_steps": 0, "num_samples": 1}
    ),
    path,
  )
  return colorize.Colorizer.from_checkpoint(path, batch_size=1)


def test_hints_mode_and_keyframe_hints(colorizer, hints_colorizer, tmp_path):
  src = str(tmp_path / "clip.mp4")
  write_clip(src, moving(5), audio=None)
  keyframes = tmp_path / "keys.json"
  keyframes.write_text(
    json.dumps({"frames": {"0": {"points": [{"x": 20, "y": 20, "rgb": [200, 30, 40], "size": 9}]}}})
  )
  result = video.colorize_video(
    hints_colorizer,
    src,
    str(tmp_path / "h.mp4"),
    temporal="hints",
    hints=str(keyframes),
    progress=False,
  )
  assert result.frames == 5
  info = video.video_io.probe(src)
  frames = list(video.video_io.read_frames(info))
  shown, state = {}, {}
  for mode in ("ema", "hints"):
    one = video._Video(hints_colorizer, info, mode, {}, {})
    batches = video._batches(iter(frames), hints_colorizer.batch_size)
    shown[mode] = [rgb for batch in batches for rgb in one.colorize(batch)]
    state[mode] = one.filter.state.ab
    one.pool.shutdown()
  assert np.array_equal(state["hints"], state["ema"])  # hinted answers never feed the state
  assert np.array_equal(shown["hints"][0], shown["ema"][0])  # nothing carried into frame 0
  assert any(not np.array_equal(h, e) for h, e in zip(shown["hints"][1:], shown["ema"][1:]))
  hints = video_temporal.hint_map(
    video_temporal.Carried(
      np.full((40, 56, 2), 30, np.float32), np.full((40, 56), video_temporal.STRENGTH, np.float32)
    ),
    (24, 32),
    32,
  )
  assert hints[..., 2].sum() == 6 * 8 and hints[24:, :, 2].sum() == 0
  with pytest.raises(errors.VideoError, match="trained with hints"):
    video.colorize_video(colorizer, src, str(tmp_path / "x.mp4"), temporal="hints")
  keyframes.write_text(json.dumps({"frames": {"7": {"points": []}}}))
  with pytest.raises(errors.HintError, match='"7" is not a frame number'):
    video.colorize_video(hints_colorizer, src, str(tmp_path / "y.mp4"), hints=str(keyframes))


def test_the_page_colorizes_a_short_clip_and_refuses_a_long_one(colorizer, tmp_path):
  gr = pytest.importorskip("gradio")
  from colorgan.inference import page as page_lib  # pylint: disable=g-import-not-at-top

  page = page_lib.Page(colorizer, str(tmp_path))
  clip = str(tmp_path / "clip.mp4")
  write_clip(clip, moving(6))
  out = page.colorize_clip(clip)
  assert out.startswith(str(tmp_path)) and out.endswith(".mp4") and not os.path.exists(clip)
  frames, times, facts = decode(out)
  want = str(tmp_path / "want.mp4")
  write_clip(clip, moving(6))  # the page deleted its upload; the command colorizes the same clip
  video.colorize_video(colorizer, clip, want, progress=False)
  assert frames and all(np.array_equal(a, b) for a, b in zip(frames, decode(want)[0]))
  assert facts["audio"] and [float(t) for t in times] == [float(t) for t in decode(want)[1]]
  long_clip = str(tmp_path / "long.mp4")
  write_clip(long_clip, moving(2), rate=fractions.Fraction(1, 20), audio=None)  # 40 s
  with pytest.raises(gr.Error, match="up to 30 s"):
    page.colorize_clip(long_clip)
  text = str(tmp_path / "notes.mp4")
  with open(text, "w") as f:
    f.write("not a video")
  with pytest.raises(gr.Error, match="not a video"):
    page.colorize_clip(text)
