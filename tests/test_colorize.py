"""--mode=colorize: full-resolution outputs whose L is the input's, any input mode, bad files named."""

import os
import re

import numpy as np
import pytest
import skimage.color
import skimage.data
from PIL import Image
from PIL import ImageOps

from colorgan import errors
from colorgan.inference import colorize
from colorgan.inference import photo
from tests.conftest import run_module

GOOD = (
  "big.jpg",
  "gray.png",
  "sub/rgba.png",
  "sub/deeper/g16.png",
  "cmyk.jpg",
  "rotated.jpg",
  "palette.png",
)
BAD = {"broken.jpg": "corrupt or unreadable", "notes.txt": "not an image", "bomb.png": "too large"}


def _cli(*args):
  return run_module("colorgan.main", *args)


@pytest.fixture(scope="module")
def workdir(tiny_run):
  return tiny_run  # conftest: a 1-step tiny run


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """A folder of photos in every mode, plus a corrupt JPEG, a text file and a decompression bomb."""
  root = tmp_path_factory.mktemp("photos")
  os.makedirs(root / "sub" / "deeper")
  Image.fromarray(skimage.data.astronaut()).resize((1200, 800)).save(root / "big.jpg", quality=90)
  Image.fromarray(skimage.data.camera()).save(root / "gray.png")
  coffee = skimage.data.coffee()[::2, ::2]
  alpha = np.tile(np.linspace(0, 255, coffee.shape[1]).astype(np.uint8), (coffee.shape[0], 1))
  Image.fromarray(np.dstack([coffee, alpha])).save(root / "sub" / "rgba.png")
  # 16-bit values that 8 bits cannot hold: a smooth ramp times the camera photo.
  ramp = np.linspace(0.2, 1.0, 512)[None, :] * (skimage.data.camera() / 255.0 * 0.8 + 0.2)
  Image.fromarray(np.round(ramp * 65535).astype(np.uint16)).save(
    root / "sub" / "deeper" / "g16.png"
  )
  Image.fromarray(skimage.data.chelsea()).convert("CMYK").save(root / "cmyk.jpg")
  rocket = Image.fromarray(skimage.data.rocket())
  exif = rocket.getexif()
  exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
  rocket.save(root / "rotated.jpg", exif=exif)
  Image.fromarray(skimage.data.chelsea()).convert("P").save(root / "palette.png")
  (root / "broken.jpg").write_bytes((root / "big.jpg").read_bytes()[:4000])
  (root / "notes.txt").write_text("not a photo\n")
  Image.new("1", (10_000, 10_000)).save(root / "bomb.png")  # 100 megapixels in a few kB
  (root / ".hidden.png").write_bytes(b"")  # hidden files are not inputs
  return root


def _reference(path):
  """The input as displayed (EXIF applied): float RGB in [0, 1] and its alpha or None."""
  image = ImageOps.exif_transpose(Image.open(path))
  if image.mode == "I;16":
    gray = np.asarray(image) / 65535.0
    return np.dstack([gray] * 3), None
  alpha = np.asarray(image.convert("RGBA"))[..., 3] if image.mode == "RGBA" else None
  return np.asarray(image.convert("RGB")) / 255.0, alpha


def _lightness_error(reference_rgb, output_rgb):
  return np.abs(
    skimage.color.rgb2lab(reference_rgb)[..., 0] - skimage.color.rgb2lab(output_rgb / 255.0)[..., 0]
  )


def test_colorize_a_folder_of_every_kind(workdir, photos, tmp_path):
  out = tmp_path / "out"
  result = _cli(
    "--mode=colorize", f"--workdir={workdir}", f"--input={photos}", f"--output_dir={out}"
  )
  assert result.returncode == 1, result.stderr
  assert f"colorized {len(GOOD)} of {len(GOOD) + len(BAD)} photo(s) into {out}" in result.stdout
  assert f"{len(BAD)} of {len(GOOD) + len(BAD)} photo(s) failed" in result.stderr
  lines = re.split(r"[\r\n]", result.stderr)
  for name, reason in BAD.items():
    named = [line for line in lines if line.startswith(f"colorgan: {photos / name}: ")]
    assert len(named) == 1 and reason in named[0], (name, result.stderr)
  assert "Traceback" not in result.stderr

  written = sorted(
    os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs
  )
  assert written == sorted(os.path.splitext(name)[0] + ".png" for name in GOOD)
  for name in GOOD:
    reference, alpha = _reference(photos / name)
    output = np.asarray(Image.open(out / (os.path.splitext(name)[0] + ".png")))
    assert output.shape[:2] == reference.shape[:2], name  # full resolution, EXIF rotation applied
    error = _lightness_error(reference, output[..., :3])
    assert error.mean() <= 0.5 and np.percentile(error, 99) <= 2, (name, error.mean(), error.max())
    if alpha is not None:
      np.testing.assert_array_equal(output[..., 3], alpha)
    else:
      assert output.shape[2] == 3, name
  rotated = Image.open(photos / "rotated.jpg")
  assert Image.open(out / "rotated.png").size == rotated.size[::-1]


def test_refuses_to_overwrite_an_input(workdir, photos, tmp_path):
  result = _cli(
    "--mode=colorize", f"--workdir={workdir}", f"--input={photos}/*.png", f"--output_dir={photos}"
  )
  assert result.returncode == 2
  assert f"--output_dir={photos} would overwrite the input {photos}/" in result.stderr
  assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def colorizer(workdir):
  return colorize.Colorizer.from_checkpoint(workdir, batch_size=2)


def test_jpg_output_and_a_glob(colorizer, photos, tmp_path):
  work = photo.plan(
    [str(photos / "sub" / "*.png"), str(photos / "gray.png")], str(tmp_path / "jpg"), "jpg"
  )
  assert colorizer.run(work) == 0
  rgba = Image.open(tmp_path / "jpg" / "rgba.jpg")
  assert rgba.format == "JPEG" and rgba.mode == "RGB" and rgba.size == (300, 200)
  gray = np.asarray(Image.open(tmp_path / "jpg" / "gray.jpg"))
  error = _lightness_error(_reference(photos / "gray.png")[0], gray)
  assert error.mean() <= 0.5 and np.percentile(error, 99) <= 2  # JPEG at quality 95


def test_rerunning_into_the_input_folder_does_not_colorize_earlier_outputs(colorizer, tmp_path):
  folder = tmp_path / "album"
  os.makedirs(folder)
  Image.fromarray(skimage.data.chelsea()[::4, ::4]).save(folder / "cat.jpg")
  Image.fromarray(skimage.data.coffee()[::4, ::4]).save(folder / "cup.jpg")
  for _ in range(3):  # JPEG inputs, PNG outputs beside them: every rerun finds the same work
    work = photo.plan([str(folder)], str(folder))
    assert [os.path.basename(job.output) for job in work.jobs] == ["cat.png", "cup.png"]
    assert colorizer.run(work) == 0
  assert sorted(os.listdir(folder)) == ["cat.jpg", "cat.png", "cup.jpg", "cup.png"]
  assert work.earlier_outputs == 2
  assert photo.is_colorgan_output(str(folder / "cat.png"))
  assert not photo.is_colorgan_output(str(folder / "cat.jpg"))
  elsewhere = photo.plan([str(folder)], str(tmp_path / "jpg"), "jpg")
  assert colorizer.run(elsewhere) == 0
  assert photo.is_colorgan_output(str(tmp_path / "jpg" / "cat.jpg"))  # the EXIF Software tag
  with pytest.raises(errors.PlanError, match="no file found but 1 colorgan output"):
    photo.plan([str(folder / "cat.png")], str(tmp_path / "again"))


def test_an_animation_is_colorized_from_its_first_frame_with_a_note(colorizer, tmp_path, capsys):
  frames = [
    Image.fromarray(skimage.data.chelsea()[::4, ::4]),
    Image.fromarray(skimage.data.coffee()[::4, ::4]).resize((113, 75)),
  ]
  frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
  assert colorizer.run(photo.plan([str(tmp_path / "anim.gif")], str(tmp_path / "out"))) == 0
  err = capsys.readouterr().err
  assert (
    f"colorgan: {tmp_path / 'anim.gif'}: 2 frames (an animation or several pages): only the "
    "first one is colorized" in err
  )
  first = np.asarray(frames[0].convert("RGB")) / 255.0
  output = np.asarray(Image.open(tmp_path / "out" / "anim.png"))
  assert output.shape[:2] == first.shape[:2]
  # GIF's palette quantizes the frame: the output's L follows the decoded first frame.
  decoded = np.asarray(Image.open(tmp_path / "anim.gif").convert("RGB")) / 255.0
  assert _lightness_error(decoded, output).mean() <= 0.5


def test_colorize_size_must_suit_the_unet(workdir):
  with pytest.raises(ValueError, match="--colorize_size=48 must be a multiple of 32"):
    colorize.Colorizer.from_checkpoint(workdir, size=48)


# ----------------------------------------------------------------------------- pixels
def test_lightness_matches_skimage():
  rgb = skimage.data.coffee()[::4, ::4]
  expected = skimage.color.rgb2lab(rgb / 255.0)[..., 0]
  np.testing.assert_allclose(photo.lightness(rgb), expected, atol=2e-3)  # uint8: a lookup table
  np.testing.assert_allclose(photo.lightness(rgb / 255.0), expected, atol=2e-3)


@pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB:UserWarning")  # skimage's clipping note
def test_compose_keeps_lightness_and_hue_where_clipping_would_not():
  rng = np.random.default_rng(0)
  l = rng.uniform(3, 97, (64, 64)).astype(np.float32)
  ab = rng.uniform(-100, 100, (64, 64, 2)).astype(np.float32)  # mostly outside the sRGB gamut
  rgb = photo.compose(l, ab)
  lab = skimage.color.rgb2lab(rgb / 255.0)
  error = np.abs(lab[..., 0] - l)
  assert error.mean() <= 0.3 and np.percentile(error, 99) <= 1, (error.mean(), error.max())
  clipped = np.round(skimage.color.lab2rgb(np.dstack([l, ab])) * 255) / 255.0
  assert np.percentile(np.abs(skimage.color.rgb2lab(clipped)[..., 0] - l), 99) > 5  # why it exists
  # Hue kept where color remains; chroma only ever reduced.
  chroma = np.hypot(lab[..., 1], lab[..., 2])
  hue_diff = np.angle(
    np.exp(1j * (np.arctan2(lab[..., 2], lab[..., 1]) - np.arctan2(ab[..., 1], ab[..., 0]))),
    deg=True,
  )
  assert np.median(np.abs(hue_diff[chroma > 20])) < 2
  assert np.all(chroma <= np.hypot(ab[..., 0], ab[..., 1]) + 2)
  # In gamut, compose is the plain Lab -> sRGB conversion.
  inside = np.dstack([np.full((8, 8), 60.0), rng.uniform(-20, 20, (8, 8, 2))]).astype(np.float32)
  expected = np.round(skimage.color.lab2rgb(inside) * 255)
  assert np.abs(photo.compose(inside[..., 0], inside[..., 1:]) - expected).max() <= 1


def test_whole_photo_geometry():
  assert photo.content_size(600, 400, 64, squash=False) == (64, 43)
  assert photo.content_size(400, 600, 64, squash=False) == (43, 64)
  assert photo.content_size(5000, 10, 64, squash=False) == (64, 1)
  assert photo.content_size(400, 600, 64, squash=True) == (64, 64)
  l = np.tile(np.linspace(0, 100, 600, dtype=np.float32), (400, 1))  # a horizontal ramp
  model_l = photo.model_input(l, 64, squash=False)[..., 0]
  assert model_l.shape == (64, 64)
  np.testing.assert_array_equal(model_l[43:], model_l[42 : 42 - 21 : -1])  # mirror padding below
  np.testing.assert_allclose(model_l[0, [0, -1]], [-1, 1], atol=0.05)  # the whole width is there
  # The padding's prediction is dropped: only the photo's area is upsampled.
  ab = np.full((64, 64, 2), 0.9, np.float32)
  ab[:43] = [0.1, -0.2]
  np.testing.assert_allclose(
    photo.upsample_ab(ab, 400, 600, squash=False),
    np.broadcast_to([11.0, -22.0], (400, 600, 2)),
    rtol=1e-5,
  )


# ----------------------------------------------------------------------------- planning
def test_plan_keeps_relative_paths_and_never_overwrites(tmp_path):
  src = tmp_path / "in"
  os.makedirs(src / "a" / "b")
  for name in ("x.jpg", "x.png", "a/y.jpg", "a/b/z.tif", ".hidden.jpg", "out/old.png"):
    os.makedirs(os.path.dirname(src / name), exist_ok=True)
    (src / name).write_bytes(b"")
  work = photo.plan([str(src)], str(src / "out"))
  names = sorted(os.path.relpath(job.output, src / "out") for job in work.jobs)
  # x.jpg and x.png would both be x.png: each keeps its extension; the output folder is skipped.
  assert names == ["a/b/z.png", "a/y.png", "x.jpg.png", "x.png.png"]
  work = photo.plan([str(src / "a" / "**" / "*.*")], str(tmp_path / "o"), "jpg")
  assert sorted(os.path.relpath(j.output, tmp_path / "o") for j in work.jobs) == [
    "b/z.jpg",
    "y.jpg",
  ]
  with pytest.raises(errors.PlanError, match="would overwrite the input"):
    photo.plan([str(src / "x.png")], str(src))
  with pytest.raises(errors.PlanError, match="no such file or folder"):
    photo.plan([str(tmp_path / "missing")], str(tmp_path / "o"))
  with pytest.raises(errors.PlanError, match="matches no file"):
    photo.plan([str(tmp_path / "*.webp")], str(tmp_path / "o"))


def test_an_output_dir_that_cannot_be_written_is_one_line_before_any_work(
  workdir, photos, read_only_folder
):
  result = _cli(
    "--mode=colorize",
    f"--workdir={workdir}",
    f"--input={photos}",
    f"--output_dir={read_only_folder}",
  )
  assert result.returncode == 2, result.stderr
  assert result.stderr.splitlines()[-1].startswith(
    f"colorgan: error: --output_dir={read_only_folder} cannot be written: "
  )
  assert result.stderr.splitlines()[-1].endswith(
    "(a read-only file system or a missing permission: choose another --output_dir)"
  )
  assert "Colorizing" not in result.stderr and "Traceback" not in result.stderr  # no work done
  inside = os.path.join(read_only_folder, "colorized")  # a folder that cannot be made
  with pytest.raises(errors.PlanError, match=f"--output_dir={inside} cannot be created: "):
    photo.plan([str(photos)], inside)
  assert not os.path.exists(inside)


def test_failures_are_lines_of_their_own_off_a_terminal(colorizer, photos, tmp_path, capsys):
  """In a log file or a pipe, a progress bar is carriage returns: a failure written between two
  redraws would continue the bar's line. Off a terminal there is no bar."""
  names = ("gray.png", "notes.txt", "palette.png", "broken.jpg")
  work = photo.plan([str(photos / name) for name in names], str(tmp_path / "out"))
  assert colorizer.run(work) == 2
  err = capsys.readouterr().err
  assert "\r" not in err, err
  lines = err.splitlines()
  assert f"colorgan: {photos / 'notes.txt'}: not an image (Pillow cannot identify it)" in lines
  assert [line for line in lines if line.startswith(f"colorgan: {photos / 'broken.jpg'}: ")]
  assert lines[-1] == "colorgan: 2 of 4 photo(s) failed (named above)"
