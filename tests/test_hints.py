"""Color hints: unchanged networks without them, simulated hints, people's hint files on the model's
grid, one-line errors, evaluation by number of hints, and training then colorizing with hints."""

import fractions
import functools
import hashlib
import json
import logging
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import skimage.color
from PIL import Image

from colorgan import checkpointing
from colorgan import errors
from colorgan.inference import colorize
from colorgan.inference import photo as photo_lib
from colorgan.inference import user_hints
from colorgan import configuration
from colorgan.evaluation import evaluator
from colorgan.evaluation import hint_response
from colorgan.evaluation import records
from colorgan import hints
from colorgan.data import sources
from colorgan import models
from colorgan import parallel
from colorgan.evaluation import plot
from colorgan.training import step as step_lib
from tests.conftest import leaves as _leaves
from tests.conftest import run_module
from tests.conftest import tiny_config


def _count(module, *inputs):
  variables = jax.eval_shape(
    functools.partial(module.init, train=False), jax.random.key(0), *inputs
  )
  return sum(int(x.size) for x in jax.tree.leaves(variables["params"]))


def _shapes(size):
  return (
    jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32),
    jax.ShapeDtypeStruct((1, size, size, 2), jnp.float32),
  )


# ----------------------------------------------------------------------------- without hints
def test_without_hints_the_networks_are_todays_and_hints_widen_only_the_inputs():
  from configs import default  # pylint: disable=g-import-not-at-top
  from configs import resnet_unet  # pylint: disable=g-import-not-at-top

  l, ab = _shapes(256)
  for make, g_params, extra in (
    (default.get_config, 54_409_858, 3 * 16 * 64),
    # the stem (7x7, 64) and the last block's full-size skip (3x3, 32)
    (resnet_unet.get_config, 15_228_898, 3 * 49 * 64 + 3 * 9 * 32),
  ):
    config = make()
    assert not config.hints.enabled
    assert _count(models.create_generator(config), l) == g_params
    assert _count(models.create_discriminator(config), l, ab) == 2_765_633
    config.hints.enabled = True
    assert _count(models.create_generator(config), l) == g_params + extra
    # D is conditioned on the hints too: its first 4x4 conv takes 3 more channels.
    assert _count(models.create_discriminator(config), l, ab) == 2_765_633 + 3 * 16 * 64


# The traced program of one tiny train step (tests/conftest.py's tiny_config, fast_layers resolved
# on CPU) before color hints existed (commit e3e958f), sharding annotations and whitespace left out
# (they follow how the inputs happen to be placed, not what is computed): with hints off the step is
# the same program, hence bit for bit the same results on any machine. A deliberate change of the
# step updates these. Re-pinned when train_step was split into its D update, G update and guard
# (training/step.py): the split computes stop_gradient(fake_ab) once and orders two equations
# differently; 3 steps of 5 recipes gave bit-identical states and metrics before and after.
# Re-pinned again when the recipe study's terms came (colourfulness, feature matching, the
# classification head's cross-entropy): the step returns their metrics (zeros when off), and G's
# output passes through the objective under another name; the same 3 steps of 5 recipes were again
# bit-identical.
STEP_PROGRAM_SHA256 = {
  "unet": "9467b76501dfb1d6cf6380b991bb5900fc32323fcb018091621e8c09f1bdb796",
  "resnet_unet": "093c7b561cc99f6482e393a64ec0577c3a4e827c585a15489d86e6cfe475152e",
}


def _program_sha256(jaxpr) -> str:
  """The jaxpr's text without `sharding=...` / `out_sharding=...` annotations and whitespace."""
  text, kept, i = str(jaxpr), [], 0
  for match in re.finditer(r"\b(?:out_)?sharding=", text):
    if match.start() < i:
      continue
    kept.append(text[i : match.start()])
    i = match.end()
    if text.startswith("None", i):
      i += 4
      continue
    depth, i = 0, text.index("(", i)
    while True:  # to the annotation's closing parenthesis
      depth += {"(": 1, ")": -1}.get(text[i], 0)
      i += 1
      if not depth:
        break
  kept.append(text[i:])
  return hashlib.sha256("".join("".join(kept).split()).encode()).hexdigest()


def _step_program(config, mesh, batch) -> str:
  g, d = models.create_generator(config), models.create_discriminator(config)
  state = jax.eval_shape(
    functools.partial(step_lib.create_train_state, config, g, d), jax.random.key(config.seed)
  )
  return _program_sha256(jax.make_jaxpr(step_lib.make_train_step(config, g, d, mesh))(state, batch))


@pytest.mark.parametrize("generator", sorted(STEP_PROGRAM_SHA256))
def test_without_hints_the_train_step_is_the_program_of_before(generator):
  config = tiny_config(**{"model.generator": generator})
  mesh = parallel.create_mesh()
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  with jax.set_mesh(mesh):
    batch = parallel.global_batch(mesh, {"image": images})
    assert _step_program(config, mesh, batch) == STEP_PROGRAM_SHA256[generator]


# ----------------------------------------------------------------------------- simulated hints
SPEC = hints.HintSpec(
  p=1 / 8, no_hint_share=0.25, max_points=64, min_patch_size=1, max_patch_size=9, center_sigma=0.25
)


def test_hint_map_squares_hold_the_mean_color_and_the_last_square_wins():
  ab = np.random.default_rng(0).uniform(-1, 1, (20, 30, 2)).astype(np.float32)
  top, left, size = np.array([2, 5, 15, 0]), np.array([3, 6, 20, 0]), np.array([5, 3, 5, 1])
  active = np.array([True, True, True, False])
  got = np.asarray(hints.hint_map(ab, top, left, size, active, 9))
  want = np.zeros((20, 30, 3), np.float32)
  for t, l, s, a in zip(top, left, size, active):  # later squares paint over earlier ones
    if a:
      want[t : t + s, l : l + s, :2] = ab[t : t + s, l : l + s].mean(axis=(0, 1))
      want[t : t + s, l : l + s, 2] = 1
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert got[..., 2].sum() == 25 + 9 + 25 - 4  # two squares overlap on 2x2 pixels; one inactive


def test_simulated_hints_are_deterministic_per_step_and_follow_the_distribution():
  ab = np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 2)).astype(np.float32)
  simulate = jax.jit(hints.simulate, static_argnums=2)
  key = jax.random.key(0)
  first = np.asarray(simulate(jax.random.fold_in(key, 3), ab, SPEC))
  np.testing.assert_array_equal(first, simulate(jax.random.fold_in(key, 3), ab, SPEC))
  assert not np.array_equal(first, simulate(jax.random.fold_in(key, 4), ab, SPEC))
  assert set(np.unique(first[..., 2])) <= {0.0, 1.0}
  assert np.all(first[..., :2][first[..., 2] == 0] == 0)

  n = 40_000
  draw = functools.partial(hints._draw_count, spec=SPEC)  # pylint: disable=protected-access
  counts = np.asarray(jax.vmap(draw)(jax.random.split(jax.random.key(1), n)))
  zero = np.mean(counts == 0)
  assert abs(zero - SPEC.no_hint_share) < 0.01
  drawn = counts[counts > 0]
  # Geometric(1/8) on 1, 2, ... capped at 64: P(n = 1) = 1/8, and the capped mean.
  capped_mean = sum((1 - SPEC.p) ** k for k in range(SPEC.max_points))
  assert abs(np.mean(drawn == 1) - SPEC.p) < 0.01
  assert abs(drawn.mean() - capped_mean) < 0.15 and drawn.max() == SPEC.max_points

  sample = jax.jit(hints.sample_points, static_argnums=(1, 2, 3, 4))
  top, left, size = (np.asarray(x) for x in sample(jax.random.key(2), n, 64, 48, SPEC))
  np.testing.assert_allclose(np.bincount(size)[1:] / n, 1 / 9, atol=0.01)  # sizes 1..9 uniform
  assert np.all((top >= 0) & (top + size <= 64) & (left >= 0) & (left + size <= 48))
  # Locations (1-pixel squares: nothing moved at the edges) follow the Gaussian at the center with
  # sigma = side / 4, truncated to the image, against scipy's, drawn at pixel resolution.
  top, left, _ = (
    np.asarray(x)
    for x in sample(jax.random.key(3), n, 64, 48, SPEC._replace(min_patch_size=1, max_patch_size=1))
  )
  for got, side in ((top, 64), (left, 48)):
    reference = scipy.stats.truncnorm(-2, 2, loc=side / 2, scale=side / 4)
    drawn = np.floor(reference.rvs(n, random_state=side))
    assert abs(got.mean() - drawn.mean()) < 0.3 and abs(got.std() - drawn.std()) < 0.3
    assert got.std() < 0.8 * side / np.sqrt(12)  # a uniform draw's spread is far larger
    assert scipy.stats.ks_2samp(got, drawn).pvalue > 1e-3


def test_simulated_hint_colors_are_the_photo_under_them():
  """Through simulate itself: every hinted pixel's color is the mean of a square around it."""
  ab = np.random.default_rng(2).uniform(-1, 1, (4, 32, 32, 2)).astype(np.float32)
  spec = SPEC._replace(no_hint_share=0.0, max_points=1)  # one square each: no overlap
  got = np.asarray(hints.simulate(jax.random.key(5), ab, spec))
  for image, hint in zip(ab, got):
    rows, cols = np.nonzero(hint[..., 2])
    top, left, side = rows.min(), cols.min(), rows.max() - rows.min() + 1
    assert len(rows) == side * side and cols.max() - left + 1 == side  # one square
    np.testing.assert_allclose(
      hint[rows, cols, :2],
      np.broadcast_to(image[top : top + side, left : left + side].mean((0, 1)), (len(rows), 2)),
      atol=1e-6,
    )


def test_ground_truth_hints_are_seeded_by_image_and_nested_by_count():
  ab = np.random.default_rng(3).uniform(-1, 1, (3, 32, 32, 2)).astype(np.float32)
  fn = jax.jit(hints.ground_truth_hints, static_argnums=3)
  index = np.array([5, 6, 7])
  five, ten = (np.asarray(fn(ab, index, n, 50)) for n in (5, 10))
  assert not fn(ab, index, 0, 50).any()
  assert np.all(ten[..., 2] >= five[..., 2]) and ten[..., 2].sum() > five[..., 2].sum()
  # An image's points depend on its index only, not on the batch or max_count around it.
  alone = np.asarray(fn(ab[1:2], index[1:2], 5, 20))
  np.testing.assert_array_equal(alone[0, ..., 2], five[1, ..., 2])


# ----------------------------------------------------------------------------- people's hints
def _expected_cells(rows, cols, photo_shape, content_shape):
  """By exact geometry: grid cells (i, j) whose area overlaps a hint pixel's."""
  (height, width), (h, w) = photo_shape, content_shape
  fy, fx = fractions.Fraction(height, h), fractions.Fraction(width, w)
  cells = {}
  for r, c in zip(rows, cols):
    for i in range(h):
      if r < (i + 1) * fy and r + 1 > i * fy:
        for j in range(w):
          if c < (j + 1) * fx and c + 1 > j * fx:
            cells.setdefault((i, j), []).append((r, c))
  return cells


def _check_grid(grid, user_rgb, rows, cols, photo_shape, content_shape):
  """grid [S, S, 3] against the cells and the mean Lab ab (skimage) of their hint pixels."""
  cells = _expected_cells(rows, cols, photo_shape, content_shape)
  assert set(zip(*np.nonzero(grid[..., 2]))) == set(cells)
  lab = skimage.color.rgb2lab(user_rgb.astype(np.float64) / 255.0)
  for (i, j), pixels in cells.items():
    want = np.mean([lab[r, c, 1:] for r, c in pixels], axis=0) / 110.0
    np.testing.assert_allclose(grid[i, j, :2], want, atol=2e-3)


# (photo height, width, model size, squash): both orientations, odd sizes, a photo smaller than
# the grid (a pixel covers several cells) and a squashed one.
GRID_CASES = [(47, 30, 32, False), (29, 45, 32, False), (19, 13, 32, False), (45, 29, 32, True)]


@pytest.mark.parametrize("height, width, size, squash", GRID_CASES)
def test_json_hints_land_on_the_model_grid_where_the_photo_is(
  tmp_path, height, width, size, squash
):
  points = [
    {"x": 3, "y": 4, "rgb": [200, 30, 40], "size": 5},
    {"x": width - 1, "y": height // 2, "rgb": [20, 90, 220], "size": 1},
    {"x": width // 2 + 0.7, "y": height - 2, "rgb": [40, 180, 60]},
  ]  # size 1, x floored
  path = tmp_path / "p.json"
  path.write_text(json.dumps({"points": points}))
  user = user_hints.read_user_hints(str(path), height, width)
  grid = photo_lib.model_hints(user, height, width, size, squash)
  rgb = np.zeros((height, width, 3), np.uint8)  # the colors painted at photo resolution
  for p in points:
    x, y, s = int(p["x"]), int(p["y"]), p.get("size", 1)
    rgb[max(0, y - (s - 1) // 2) : y + s // 2 + 1, max(0, x - (s - 1) // 2) : x + s // 2 + 1] = p[
      "rgb"
    ]
  painted = np.nonzero(rgb.any(axis=-1))
  assert sorted(zip(*painted)) == sorted(zip(user.rows, user.cols))
  content = photo_lib.content_size(height, width, size, squash)
  _check_grid(grid, rgb, *painted, (height, width), content)
  # The photo itself lands there too: a white square under the first hint, on black, is brightest
  # in the first hint's cells of model_input.
  l = np.zeros((height, width), np.float32)
  l[2:7, 1:6] = 100.0
  model_l = photo_lib.model_input(l, size, squash)[..., 0]
  first = _expected_cells(*np.nonzero(l), (height, width), content)
  assert np.unravel_index(np.argmax(model_l), model_l.shape) in first
  assert all(grid[i, j, 2] == 1 for i, j in first)


@pytest.mark.parametrize("height, width, size, squash", GRID_CASES)
def test_png_hints_land_on_the_model_grid(tmp_path, height, width, size, squash):
  rng = np.random.default_rng(height)
  rgba = np.zeros((height, width, 4), np.uint8)
  rgba[..., :3] = rng.integers(0, 256, (height, width, 3))  # colors under transparency: ignored
  stroke = [(i, (2 * i) % width) for i in range(0, height, 3)] + [(height - 1, width - 1)]
  for r, c in stroke:
    rgba[r, c] = [*rng.integers(0, 256, 3), 255]
  rgba[0, 0, 3] = MIN = user_hints.MIN_ALPHA  # at the threshold: a hint
  rgba[1, 1, 3] = MIN - 1  # a faint antialiased edge: not a hint
  path = tmp_path / "scribble.png"
  Image.fromarray(rgba).save(path)
  user = user_hints.read_user_hints(str(path), height, width)
  rows, cols = np.nonzero(rgba[..., 3] >= MIN)
  assert sorted(zip(user.rows, user.cols)) == sorted(zip(rows, cols)) and (1, 1) not in set(
    zip(user.rows, user.cols)
  )
  grid = photo_lib.model_hints(user, height, width, size, squash)
  _check_grid(
    grid,
    rgba[..., :3],
    rows,
    cols,
    (height, width),
    photo_lib.content_size(height, width, size, squash),
  )


def test_hints_follow_the_photos_exif_orientation(tmp_path):
  photo = tmp_path / "rotated.jpg"
  image = Image.new("RGB", (40, 20), "gray")  # stored 40 wide, displayed 20 wide and 40 high
  exif = image.getexif()
  exif[0x0112] = 6
  image.save(photo, exif=exif)
  assert user_hints.photo_size(str(photo)) == photo_lib.load_photo(str(photo)).l.shape == (40, 20)
  good, bad = tmp_path / "good.json", tmp_path / "bad.json"
  good.write_text(json.dumps({"points": [{"x": 19, "y": 39, "rgb": [1, 2, 3]}]}))
  bad.write_text(json.dumps({"points": [{"x": 39, "y": 19, "rgb": [1, 2, 3]}]}))
  user_hints.check_hint_files({str(photo): str(good)})
  with pytest.raises(errors.HintError, match=r"outside the photo \(20x40 pixels\)"):
    user_hints.check_hint_files({str(photo): str(bad)})


def _write(path, content):
  if isinstance(content, Image.Image):
    content.save(path)
  elif isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
  return str(path)


def _point(**kwargs):
  return {"points": [{"x": 5, "y": 5, "rgb": [10, 20, 30], **kwargs}]}


BAD_FILES = [  # (file name, content, what the one line says)
  ("a.json", '{"points": [', "is not JSON (Expecting value at line 1 column 13)"),
  ("a.json", [1, 2], 'is not a hint file: write {"points"'),
  ("a.json", {"points": []}, "holds no point"),
  ("a.json", {"points": [3]}, "point 0 is not an object"),
  ("a.json", {"points": [{"x": 1, "rgb": [1, 2, 3]}]}, 'point 0 lacks "y"'),
  ("a.json", _point(colour=[1, 2, 3]), 'unknown key "colour"'),
  ("a.json", _point(x="5"), "\"x\"='5' is not a number of pixels"),
  ("a.json", _point(x=True), '"x"=True is not a number of pixels'),
  ("a.json", _point(x=12), "point 0 at (x=12, y=5) is outside the photo (12x10 pixels)"),
  ("a.json", _point(y=-1), "is outside the photo"),
  ("a.json", _point(rgb=[300, 0, 0]), '"rgb"=[300, 0, 0] is not a color'),
  ("a.json", _point(rgb="#ff0000"), "is not a color"),
  ("a.json", _point(size=0), '"size"=0 must be a whole number of pixels >= 1'),
  ("a.json", _point(size=2.5), "must be a whole number"),
  ("a.json", b"\xff\xfe{", "cannot be read"),
  ("a.png", Image.new("RGBA", (13, 10)), "is 13x10 pixels but the photo is 12x10"),
  ("a.png", Image.new("RGB", (12, 10)), "has no transparency"),
  ("a.png", Image.new("RGBA", (12, 10), (255, 0, 0, 100)), "holds no hint"),
  ("a.png", b"\x89PNG\r\n\x1a\nbroken", "cannot be read as an image"),
  ("a.txt", "hello", "is neither .json (points) nor .png (a scribble)"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES)
def test_every_bad_hint_file_is_one_line_naming_it(tmp_path, name, content, message):
  path = _write(tmp_path / name, content)
  with pytest.raises(errors.HintError) as e:
    user_hints.read_user_hints(path, 10, 12)
  assert str(e.value).startswith(f"--hints={path}") and message in str(e.value)
  assert "\n" not in str(e.value)


def test_hint_files_are_matched_to_the_photos_by_output_name(tmp_path):
  photos = [str(tmp_path / "in" / n) for n in ("a.jpg", "sub/b.png", "c.jpg")]
  outputs = [str(tmp_path / "out" / n) for n in ("a.png", "sub/b.png", "c.png")]
  folder = tmp_path / "hints"
  os.makedirs(folder / "sub")
  _write(folder / "a.json", _point())
  _write(folder / "sub" / "b.png", Image.new("RGBA", (12, 10)))
  _write(folder / "notes.txt", "other files are not hint files")
  found = user_hints.match_hint_files(str(folder), photos, outputs, str(tmp_path / "out"))
  assert found == {photos[0]: str(folder / "a.json"), photos[1]: str(folder / "sub" / "b.png")}
  single = str(folder / "a.json")
  assert user_hints.match_hint_files(single, photos[:1], outputs[:1], "out") == {photos[0]: single}

  def mistake(path, sources, message):
    with pytest.raises(errors.HintError) as e:
      user_hints.match_hint_files(path, sources, outputs[: len(sources)], str(tmp_path / "out"))
    assert message in str(e.value) and str(e.value).startswith(f"--hints={path}")

  mistake(str(tmp_path / "nope"), photos, "no such file or folder")
  mistake(single, photos, "is one photo's hints but the inputs are 3 photos: give a folder")
  os.makedirs(tmp_path / "empty")
  mistake(str(tmp_path / "empty"), photos, "holds no hint file for any input photo")
  _write(folder / "sub" / "b.json", _point())
  mistake(str(folder), photos, "holds both sub/b.json and sub/b.png for")
  os.remove(folder / "sub" / "b.json")
  _write(folder / "d.json", _point())
  mistake(str(folder), photos, "d.json matches no input photo")


def test_hint_keys_are_checked_in_one_line():
  cases = [
    ({"hints.p": 0.0}, "config.hints.p=0.0 must be in (0, 1]"),
    ({"hints.no_hint_share": 1.5}, "config.hints.no_hint_share=1.5 must be in [0, 1]"),
    ({"hints.max_points": 0}, "config.hints.max_points=0 must be a whole number >= 1"),
    ({"hints.min_patch_size": 5, "hints.max_patch_size": 3}, "is larger than max_patch"),
    ({"hints.max_patch_size": 33}, "larger than image_size=32"),
    ({"hints.center_sigma": -1.0}, "config.hints.center_sigma=-1.0 must be >= 0"),
    ({"eval.hint_counts": (0, -1), "hints.enabled": True}, "must be whole numbers >= 0"),
    ({"eval.hint_counts": (0, 10)}, "needs a generator trained with hints"),
  ]
  for overrides, message in cases:
    with pytest.raises(
      errors.ConfigError,
      match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
    ):
      configuration.validate(tiny_config(**overrides))
  configuration.validate(tiny_config(**{"hints.enabled": True, "eval.hint_counts": (0, 10)}))


def test_the_plot_draws_the_values_in_order():
  image = np.asarray(
    plot.line_plot(
      [0, 1, 5], [21.0, 23.0, 22.0], title="t", x_label="x", y_label="y", reference=(22.5, "gray")
    )
  )
  blue = np.all(image == plot.LINE, axis=-1)
  cols = np.nonzero(blue.any(axis=0))[0]
  thirds = np.array_split(np.arange(cols.min(), cols.max() + 1), 3)
  # Each marker's center row in its third of the plot: higher PSNR is higher up.
  y = [
    np.nonzero(blue[:, third].any(axis=1))[0].mean()
    for third in (third[len(third) // 2 - 2 : len(third) // 2 + 3] for third in thirds)
  ]
  assert y[1] < y[2] < y[0]
  gray_rows = np.nonzero(np.all(image == plot.REFERENCE, axis=-1).sum(axis=1) > 100)[0]
  assert len(gray_rows) and y[1] < gray_rows.mean() < y[2]


# ----------------------------------------------------------------------------- layers and resume
def test_hints_generator_runs_the_same_on_both_layer_paths():
  l = np.random.default_rng(4).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
  hint = np.asarray(
    hints.ground_truth_hints(
      np.random.default_rng(5).uniform(-1, 1, (2, 32, 32, 2)).astype(np.float32),
      np.arange(2),
      10,
      10,
    )
  )
  g = {
    fast: models.create_generator(tiny_config(**{"hints.enabled": True, "model.fast_layers": fast}))
    for fast in (False, True)
  }
  assert g[True].use_hints and g[True].fast_layers and not g[False].fast_layers
  variables = jax.jit(functools.partial(g[False].init, train=False))(jax.random.key(0), l, hint)
  assert variables["params"]["down0"]["kernel"].shape == (4, 4, 4, 8)  # L + ab + mask
  out = {
    fast: np.asarray(jax.jit(functools.partial(module.apply, train=False))(variables, l, hint))
    for fast, module in g.items()
  }
  np.testing.assert_allclose(out[True], out[False], atol=1e-5)
  with pytest.raises(ValueError, match="built without hint inputs"):
    jax.eval_shape(
      functools.partial(models.create_generator(tiny_config()).init, train=False),
      jax.random.key(0),
      l,
      hint,
    )


def test_a_resumed_hints_run_is_bit_identical(tmp_path):
  """Two steps, against one step, a checkpoint restored into a fresh state, and one more: the hints
  come from the step's folded rng, so the restored run draws what the uninterrupted one did."""
  config = tiny_config(**{"hints.enabled": True})
  mesh = parallel.create_mesh()
  g, d = models.create_generator(config), models.create_discriminator(config)
  images = np.random.default_rng(6).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
  with jax.set_mesh(mesh):
    step = step_lib.make_train_step(config, g, d, mesh)
    batches = [parallel.global_batch(mesh, {"image": x}) for x in images]
    initial = jax.device_get(step_lib.init_train_state(config, g, d, mesh))
    # A fresh copy each time: the step donates its state.
    fresh = lambda: jax.device_put(
      jax.tree.map(lambda x: x.copy(), initial),  # noqa: E731
      parallel.replicated(mesh),
    )
    state = fresh()
    for batch in batches:
      state, _ = step(state, batch)
    uninterrupted = _leaves(state)
    state, _ = step(fresh(), batches[0])
    manager = checkpointing.create_manager(str(tmp_path), config)
    checkpointing.save(manager, 1, state, config, force=True)
    manager.wait_until_finished()
    restored = checkpointing.restore_latest(manager, fresh())
    manager.close()
    assert int(restored.step) == 1
    state, _ = step(restored, batches[1])
  resumed = _leaves(state)
  assert len(resumed) == len(uninterrupted)
  assert all(np.array_equal(a, b) for a, b in zip(resumed, uninterrupted))


# ----------------------------------------------------------------------------- a trained run
def _cli(*args):
  return run_module("colorgan.main", *args)


def _ab_at(rgb, points):
  lab = skimage.color.rgb2lab(rgb[..., :3] / 255.0)
  return np.array([lab[p["y"], p["x"], 1:] for p in points])


def _distance(rgb, points):
  """Lab ab distance of the output's color under each point to the point's color."""
  want = skimage.color.rgb2lab(np.array([[p["rgb"] for p in points]]) / 255.0)[0, :, 1:]
  return np.linalg.norm(_ab_at(rgb, points) - want, axis=-1)


def test_train_with_hints_then_colorize_with_hints(hints_workdir, tmp_path):
  """The real commands: a folder of three photos, hints as JSON for one, a PNG scribble for
  another, none for the third; the colors under the hints move toward the hints."""
  bundled = sources.bundled_photo_paths()
  photos, folder = tmp_path / "photos", tmp_path / "hints"
  os.makedirs(photos)
  os.makedirs(folder)
  for name, source in (("a.jpg", bundled[1]), ("b.png", bundled[6]), ("c.jpg", bundled[0])):
    Image.open(source).convert("RGB").save(photos / name)
  width, height = Image.open(photos / "a.jpg").size
  blue = [
    {"x": width // 3, "y": height // 3, "rgb": [30, 60, 220], "size": width // 8},
    {"x": 2 * width // 3, "y": 2 * height // 3, "rgb": [30, 60, 220], "size": width // 8},
  ]
  _write(folder / "a.json", {"points": blue})
  width_b, height_b = Image.open(photos / "b.png").size
  scribble = np.zeros((height_b, width_b, 4), np.uint8)
  red = {"x": width_b // 2, "y": height_b // 2, "rgb": [220, 40, 30]}
  half = width_b // 16
  scribble[red["y"] - half : red["y"] + half, red["x"] - half : red["x"] + half] = [
    220,
    40,
    30,
    255,
  ]
  Image.fromarray(scribble).save(folder / "b.png")

  result = _cli(
    "--mode=colorize",
    f"--workdir={hints_workdir}",
    f"--input={photos}",
    f"--hints={folder}",
    f"--output_dir={tmp_path / 'out'}",
  )
  assert result.returncode == 0, result.stderr
  assert "colorized 3 of 3 photo(s)" in result.stdout and "2 with hints" in result.stdout
  colorizer = colorize.Colorizer.from_checkpoint(hints_workdir, batch_size=1)
  out = lambda name: np.asarray(Image.open(tmp_path / "out" / name))  # noqa: E731
  automatic = {
    n: colorizer.colorize_photo(photo_lib.load_photo(str(photos / n)))
    for n in ("a.jpg", "b.png", "c.jpg")
  }
  # No hints: the automatic colorization (up to rounding: the command ran a batch of 3).
  assert np.abs(out("c.png").astype(int) - automatic["c.jpg"]).max() <= 1
  for name, points in (("a.png", blue), ("b.png", [red])):
    before, after = (
      _distance(automatic[name.replace("a.png", "a.jpg")], points),
      _distance(out(name), points),
    )
    assert np.all(after < before - 5), (name, before, after)
  # The output keeps the photo's own lightness under the hints too.
  lightness = lambda rgb: skimage.color.rgb2lab(rgb[..., :3] / 255.0)[..., 0]  # noqa: E731
  assert np.abs(lightness(out("a.png")) - lightness(automatic["a.jpg"])).max() < 1.0


def test_cli_hint_mistakes_stop_before_any_work(hints_workdir, tmp_path):
  photo = tmp_path / "p.png"
  Image.new("RGB", (30, 20), "gray").save(photo)
  outside = _write(tmp_path / "p.json", _point(x=30))
  result = _cli(
    "--mode=colorize",
    f"--workdir={hints_workdir}",
    f"--input={photo}",
    f"--hints={outside}",
    f"--output_dir={tmp_path / 'out'}",
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
    f"colorgan: error: --hints={outside}: point 0 at (x=30, y=5) is outside the photo (30x20 "
    "pixels): x must be in [0, 30) and y in [0, 20)"
  )
  assert not os.path.exists(tmp_path / "out")

  # A run trained without hints: its checkpoint (a fresh state is enough) refuses them.
  plain = str(tmp_path / "plain")
  config = tiny_config()
  mesh = parallel.create_mesh()
  with jax.set_mesh(mesh):
    state = step_lib.init_train_state(
      config, models.create_generator(config), models.create_discriminator(config), mesh
    )
  manager = checkpointing.create_manager(plain, config)
  checkpointing.save(manager, 0, state, config, force=True)
  manager.wait_until_finished()
  manager.close()
  with open(os.path.join(plain, "config.json"), "w") as f:
    f.write(config.to_json())
  good = _write(tmp_path / "good.json", _point())
  result = _cli(
    "--mode=colorize",
    f"--workdir={plain}",
    f"--input={photo}",
    f"--hints={good}",
    f"--output_dir={tmp_path / 'out'}",
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
    f"colorgan: error: --hints={good}: the generator of {plain} (step 0) was trained without "
    "hints; train one with --config.hints.enabled=True (configs/hints.py), or drop --hints"
  )
  assert not os.path.exists(tmp_path / "out")


class _Writer:
  def __init__(self):
    self.scalars = {}

  def write_scalars(self, step, scalars):
    self.scalars.update({(step, k): v for k, v in scalars.items()})


class _CopyHints(nn.Module):
  """A "generator" that paints each hint's color where it is and no color elsewhere."""

  use_hints: bool = True

  @nn.compact
  def __call__(self, l, hints=None, *, train: bool):
    del train
    hints = jnp.zeros(l.shape[:-1] + (3,)) if hints is None else hints
    return hints[..., :2] * hints[..., 2:]


def test_evaluation_by_number_of_hints_scores_ground_truth_points(tmp_path):
  """Through a generator that only copies its hints: no point is the gray baseline, and every point
  more brings the result closer to the photos (the points are their true colors)."""
  config = tiny_config(**{"hints.enabled": True, "eval.hint_counts": (20, 0, 2, 200)})
  mesh = parallel.create_mesh()
  scorer = evaluator.Evaluator(
    config,
    functools.partial(models.predict_ab, _CopyHints()),
    mesh,
    sources.create_source(config).eval,
  )
  assert scorer.hint_counts == (0, 2, 20, 200)  # sorted, once each
  with jax.set_mesh(mesh):
    result = scorer({}, 7)
  by_hints = result["by_hints"]
  assert list(by_hints) == ["0", "2", "20", "200"]
  assert set(by_hints["0"]) == set(evaluator.METRIC_NAMES)
  for name, value in result["baseline"].items():
    assert by_hints["0"][name] == pytest.approx(value, rel=1e-5, abs=1e-5), name
  psnr = [by_hints[n]["psnr"] for n in by_hints]
  ab_l1 = [by_hints[n]["ab_l1"] for n in by_hints]
  assert psnr == sorted(psnr) and psnr[-1] > psnr[0] + 3, psnr
  assert ab_l1 == sorted(ab_l1, reverse=True) and ab_l1[-1] < 0.5 * ab_l1[0], ab_l1

  writer = _Writer()
  path = records.record(result, str(tmp_path), writer)
  with open(path) as f:
    assert json.load(f)["by_hints"]["20"]["psnr"] == pytest.approx(by_hints["20"]["psnr"])
  assert writer.scalars[(7, "eval/hints_20/psnr")] == by_hints["20"]["psnr"]
  plotted = Image.open(tmp_path / "eval" / "psnr_by_hints_step_7.png")
  assert plotted.size == (plot.WIDTH, plot.HEIGHT)
  assert "psnr by hints: 0:" in records.summary_line(result)

  with pytest.raises(ValueError, match="needs a generator trained with hints"):
    evaluator.Evaluator(
      config,
      functools.partial(models.predict_ab, models.create_generator(tiny_config())),
      mesh,
      sources.create_source(config).eval,
      use_hints=False,
    )


def test_a_trained_hints_run_is_evaluated_by_hints(hints_workdir):
  inference = checkpointing.restore_for_inference(hints_workdir)
  config = inference.config
  config.eval.hint_counts = (0, 5)
  mesh = parallel.create_mesh()
  scorer = evaluator.Evaluator(
    config,
    functools.partial(models.predict_ab, models.create_generator(config)),
    mesh,
    sources.create_source(config).eval,
  )
  with jax.set_mesh(mesh):
    result = scorer(
      jax.device_put(inference.g_variables, parallel.replicated(mesh)), inference.step
    )
  for name, value in result["model"].items():  # no point: the model's own colorization
    assert result["by_hints"]["0"][name] == pytest.approx(value, rel=1e-4, abs=1e-4), name
  assert result["by_hints"]["5"] != result["by_hints"]["0"]


# ----------------------------------------------------------------------------- hint response
def test_the_hint_response_is_read_from_an_evaluation_that_scored_0_and_10_points():
  result = {"step": 9, "num_images": 8, "by_hints": {"0": {"psnr": 22.0}, "10": {"psnr": 25.5}}}
  response = hint_response.from_result(result)
  assert (response.step, response.num_images, response.gain_db, response.weak) == (9, 8, 3.5, False)
  assert "+3.50 dB" in hint_response.describe(response)
  assert "ignores hints" not in hint_response.describe(response)
  assert (
    hint_response.from_result(
      {"step": 9, "num_images": 8, "by_hints": {"0": {"psnr": 22.0}, "5": {"psnr": 23.0}}}
    )
    is None
  )
  assert hint_response.from_result({"step": 9, "num_images": 8}) is None
  weak = hint_response.Response(9, 8, 22.0, 22.09)
  assert weak.weak and "mostly ignores hints" in hint_response.describe(weak)
  assert hint_response.Response(9, 8, 22.0, float("nan")).weak


def _page_markdown(workdir, tmp_path):
  """The Markdown texts of the page serve builds for `workdir` (a stand-in Colorizer: no model)."""
  pytest.importorskip("gradio")
  from colorgan.inference import page as page_lib  # pylint: disable=g-import-not-at-top

  colorizer = type("Colorizer", (), {"takes_hints": True, "step": 1, "size": 32})()
  page = page_lib.Page(colorizer, str(tmp_path), hint_note=hint_response.page_note(workdir))
  demo = page_lib.build(page, [])
  return [b.value for b in demo.blocks.values() if type(b).__name__ == "Markdown"]


def test_a_model_that_ignores_hints_is_said_to_in_the_log_and_on_the_page(tmp_path, caplog):
  """One step: the hint channels are as initialized, 10 points hardly move the PSNR."""
  from colorgan.training import loop  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path / "run")
  with caplog.at_level(logging.INFO, logger="absl"):
    loop.train_and_evaluate(
      tiny_config(
        **{
          "hints.enabled": True,
          "total_steps": 1,
          "eval_every_steps": 0,
          "num_samples": 1,
          "checkpoint_every_steps": 1,
          "log_every_steps": 1,
          "sample_every_steps": 1,
        }
      ),
      workdir,
    )
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(
    m.startswith("Weak hint response at step 1: 10 ground-truth points per photo")
    and "mostly ignores hints" in m
    for m in warnings
  ), warnings
  with open(os.path.join(workdir, "eval", "hint_response.json")) as f:
    recorded = json.load(f)
  assert recorded["weak"] and recorded["gain_db"] < 1 and recorded["count"] == 10, recorded
  assert recorded["step"] == 1 and recorded["num_images"] == 8
  note = hint_response.page_note(workdir)
  assert note.startswith("**This model barely follows hints:**") and "(step 1)" in note
  assert note in _page_markdown(workdir, tmp_path)


def test_a_model_that_follows_hints_gets_no_line(tmp_path):
  """A "generator" that copies its hints: 10 points raise PSNR by far more than 1 dB."""
  config = tiny_config(**{"hints.enabled": True})
  mesh = parallel.create_mesh()
  response = hint_response.measure(
    config,
    functools.partial(models.predict_ab, _CopyHints()),
    mesh,
    sources.create_source(config).eval,
    {},
    4,
  )
  assert not response.weak and response.gain_db > 1 and response.num_images == 8, response
  workdir = str(tmp_path / "run")
  hint_response.record(response, workdir)
  assert hint_response.read(workdir)["gain_db"] == pytest.approx(response.gain_db)
  assert hint_response.page_note(workdir) is None
  assert not any("barely follows hints" in text for text in _page_markdown(workdir, tmp_path))


def test_the_hints_fixture_records_its_figure_and_the_page_line_follows_it(hints_workdir, tmp_path):
  """The fixture moves colors toward clicked hints (test_serve), yet its eval photos are its
  training photos, known by heart: their true colors add little PSNR. The line follows the
  figure."""
  recorded = hint_response.read(hints_workdir)
  assert recorded["step"] == 200 and recorded["count"] == 10, recorded
  assert recorded["weak"] == (recorded["gain_db"] < hint_response.WEAK_DB)
  note = hint_response.page_note(hints_workdir)
  assert (note is not None) == recorded["weak"]
  assert (
    any("barely follows hints" in text for text in _page_markdown(hints_workdir, tmp_path))
    == recorded["weak"]
  )
