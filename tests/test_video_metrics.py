"""colorgan.video_metrics: E_warp with Lai et al.'s occlusion rule, CDC, colorfulness, PSNR/SSIM."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from colorgan import video_metrics
from tests.test_video import texture
from tests.test_video import write_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DX, DY = 2, 1  # the known motion: pixels per frame


def shifted(n: int, flicker: float = 0.0):
  """A texture moving by (DX, DY) a frame (np.roll: exact, nothing occluded but the wrap-around),
  with `flicker` added to every other frame."""
  base = texture(48, 64)
  for t in range(n):
    frame = np.roll(base, (t * DY, t * DX), axis=(0, 1)).astype(np.float32)
    yield np.clip(frame + (flicker if t % 2 else 0.0), 0, 255).astype(np.uint8)


def exact_flows(a, b, t):
  forward = np.zeros(a.shape + (2,), np.float32)
  forward[..., 0], forward[..., 1] = DX, DY
  return forward, -forward


def test_warping_error_of_a_known_motion():
  still = video_metrics.evaluate(shifted(6), flows=exact_flows)
  assert still["E_warp"] == pytest.approx(0.0, abs=1e-9) and still["frames"] == 6
  # A flicker of d levels on every other frame: each pair differs by d everywhere it is seen.
  d = 10.0
  flicker = video_metrics.evaluate(shifted(6, d), original=shifted(6), flows=exact_flows)
  assert flicker["E_warp"] == pytest.approx((d / 255) ** 2, rel=0.02)
  assert flicker["E_warp_gray"] == pytest.approx(0.0, abs=1e-9)
  assert flicker["E_warp_excess"] == pytest.approx(flicker["E_warp"])
  with_dis = video_metrics.evaluate(shifted(6, d), original=shifted(6))
  assert with_dis["E_warp"] == pytest.approx(flicker["E_warp"], rel=0.25)


def test_cdc_colorfulness_psnr_ssim():
  red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
  red[..., 0], blue[..., 2] = 200, 200
  alternating = video_metrics.evaluate([red, blue] * 3)
  # 1 apart: disjoint R and B histograms (JS = ln 2 for those two channels, 0 for G); 2, 4 apart: 0.
  assert alternating["cdc"] == pytest.approx((2 / 3 * math.log(2)) / 3)
  gray = np.full((8, 8, 3), 90, np.uint8)
  assert video_metrics.evaluate([gray] * 3)["colorfulness"] == 0.0
  assert video_metrics.colorfulness(red) == pytest.approx(0.3 * math.hypot(200, 100))
  same = video_metrics.evaluate(list(shifted(3)), reference=list(shifted(3)))
  assert same["psnr"] == video_metrics.PSNR_CAP and same["ssim"] == pytest.approx(1.0)
  with pytest.raises(video_metrics.errors.VideoError, match="--reference ends at frame 2"):
    video_metrics.evaluate(list(shifted(3)), reference=list(shifted(2)))


def test_the_command_prints_json_last_and_errors_in_one_line(tmp_path):
  clip = str(tmp_path / "clip.mkv")
  write_clip(clip, list(shifted(4)), audio=None)
  run = lambda *args: subprocess.run(  # noqa: E731
    [sys.executable, "-m", "colorgan.video_metrics", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  done = run(clip, f"--original={clip}", f"--reference={clip}")
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["frames"] == 4 and result["psnr"] == video_metrics.PSNR_CAP
  assert result["E_warp_excess"] == pytest.approx(result["E_warp"] - result["E_warp_gray"])
  assert result["gray_from"] == "original" and 0 <= result["cdc"] < 0.1
  (tmp_path / "notes.txt").write_text("not a video")
  failed = run(str(tmp_path / "notes.txt"))
  assert failed.returncode == 2
  assert failed.stderr.strip().splitlines() == [
    f"colorgan: error: COLORIZED={tmp_path / 'notes.txt'}: not a video colorgan can read "
    "(corrupt, truncated, or not a video)"
  ]
