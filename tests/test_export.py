"""--mode=export: each format, run in its own runtime, colorizes as --mode=colorize does."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import onnxruntime
import pytest
from PIL import Image

import colorgan
from colorgan import checkpointing
from colorgan import errors
from colorgan.inference import colorize
from colorgan.inference import export
from colorgan.inference import runtimes
from colorgan.inference import photo
from colorgan.data import sources
from colorgan import models
from tests.conftest import run_module
from tests.conftest import REPO
from tests.conftest import tiny_config

# Two sizes and an odd one (both sides odd, and a tall photo whose padding repeats the mirror).
SIZES = ((48, 64), (64, 40), (37, 23))


@pytest.fixture(scope="module")
def workdir(tiny_run):
  return tiny_run  # conftest: a 1-step tiny run


@pytest.fixture(scope="module")
def vivid(workdir):
  """The run's generator with its last conv scaled up: saturated ab, mostly outside the sRGB gamut,
  so the parity covers the chroma bisection (the 1-step generator's own colors are near gray)."""
  inference = checkpointing.restore_for_inference(workdir)
  variables = jax.tree.map(np.asarray, inference.g_variables)
  variables["params"]["up0"]["kernel"] = variables["params"]["up0"]["kernel"] * 300.0
  return inference.config, variables


@pytest.fixture(scope="module")
def photos():
  """The bundled photos at SIZES (small, to keep the runtimes fast), as uint8 RGB."""
  return [
    np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
    for path in sources.bundled_photo_paths()
    for h, w in SIZES
  ]


@pytest.fixture(scope="module")
def references(vivid, photos):
  """--mode=colorize's pixels: the host path (load_photo's L, Pillow resizes, numpy compose)."""
  config, variables = vivid
  colorizer = colorize.Colorizer(config, variables, step=1, batch_size=1)
  return [colorizer.colorize_photo(photo.Photo(photo.lightness(rgb), None)) for rgb in photos]


def _agreement(outputs, references):
  """(max level difference, share of pixels whose every channel is within 1 level)."""
  diffs = [
    np.abs(o.astype(np.int32) - r.astype(np.int32)).max(axis=-1)
    for o, r in zip(outputs, references)
  ]
  within = sum(int((d <= 1).sum()) for d in diffs) / sum(d.size for d in diffs)
  return max(int(d.max()) for d in diffs), within


def test_references_exercise_the_gamut_mapping(references, photos):
  # Not a vacuous parity: the colors are strong and the bisection changed most pixels.
  config_free = [r.astype(np.int32) for r in references]
  spread = np.mean([np.abs(r - r.mean(axis=-1, keepdims=True)).mean() for r in config_free])
  assert spread > 20, spread
  assert all(r.shape == p.shape for r, p in zip(references, photos))


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_export_matches_colorize_mode(fmt, vivid, photos, references, tmp_path, record_property):
  config, variables = vivid
  output = str(tmp_path / f"colorize.{fmt}")
  info = export.export(config, variables, step=1, fmt=fmt, output=output)
  run = runtimes.runner(fmt, output)  # the format's own runtime
  outputs = [run(rgb) for rgb in photos]
  assert all(o.shape == p.shape and o.dtype == np.uint8 for o, p in zip(outputs, photos))
  worst, within = _agreement(outputs, references)
  record_property("parity", {"format": fmt, "max_level_difference": worst, "within_1": within})
  print(f"{fmt}: max level difference {worst}, {within:.5%} of pixels within 1 level")
  assert within >= 0.999 and worst <= 8, (fmt, worst, within)

  written = json.load(open(output + ".json"))
  assert written == json.loads(json.dumps(info))
  assert written["format"] == fmt and written["step"] == 1
  assert written["config"]["image_size"] == config.image_size
  assert written["contract"]["input"] == {
    **written["contract"]["input"],
    "name": "image",
    "dtype": "uint8",
    "shape": ["height", "width", 3],
  }
  assert written["contract"]["output"]["name"] == "colorized"
  assert written["contract"]["dynamic_shape"] is True
  assert (written.get("opset") == export.ONNX_OPSET) == (fmt == "onnx")


def test_onnx_graph_has_dynamic_height_and_width_and_states_its_opset(vivid, tmp_path):
  config, variables = vivid
  export.export(config, variables, step=1, fmt="onnx", output=str(tmp_path / "m.onnx"))
  session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
  [source], [target] = session.get_inputs(), session.get_outputs()
  assert (source.name, source.type, source.shape) == (
    "image",
    "tensor(uint8)",
    ["height", "width", 3],
  )
  assert (target.name, target.type, target.shape) == (
    "colorized",
    "tensor(uint8)",
    ["height", "width", 3],
  )
  import onnx  # pylint: disable=g-import-not-at-top

  model = onnx.load(str(tmp_path / "m.onnx"))
  assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]


def test_fixed_export_size(vivid, photos, references, tmp_path):
  config, variables = vivid
  fixed = export.parse_export_size("37x23")
  info = export.export(
    config, variables, step=1, fmt="tflite", output=str(tmp_path / "m.tflite"), fixed=fixed
  )
  assert info["contract"]["input"]["shape"] == [37, 23, 3] and not info["contract"]["dynamic_shape"]
  run = runtimes.runner("tflite", str(tmp_path / "m.tflite"))
  odd = [(p, r) for p, r in zip(photos, references) if p.shape[:2] == (37, 23)]
  worst, within = _agreement([run(p) for p, _ in odd], [r for _, r in odd])
  assert within >= 0.999, (worst, within)


def test_resnet_unet_exports_too(tmp_path):
  """The other generator (max pooling, bilinear upsampling inside), through the ONNX translator."""
  config = tiny_config(**{"model.generator": "resnet_unet", "image_size": 64})
  variables = jax.device_get(
    models.create_generator(config).init(
      jax.random.key(0), np.zeros((1, 64, 64, 1), np.float32), train=False
    )
  )
  rgb = np.asarray(Image.open(sources.bundled_photo_paths()[3]).convert("RGB").resize((51, 40)))
  colorizer = colorize.Colorizer(config, variables, step=0, batch_size=1)
  reference = colorizer.colorize_photo(photo.Photo(photo.lightness(rgb), None))
  export.export(config, variables, step=0, fmt="onnx", output=str(tmp_path / "m.onnx"))
  worst, within = _agreement([runtimes.runner("onnx", str(tmp_path / "m.onnx"))(rgb)], [reference])
  assert within >= 0.999, (worst, within)


def test_traced_geometry_is_colorize_modes():
  """content_size and the Pillow-bilinear weight matrices against photo.py and Pillow itself."""
  rng = np.random.default_rng(0)
  for _ in range(300):
    h, w = (int(v) for v in rng.integers(1, 700, 2))
    for size, squash in ((32, False), (256, False), (64, True)):
      got = export.content_size(np.int32(h), np.int32(w), size, squash)
      assert tuple(int(v) for v in got) == photo.content_size(h, w, size, squash), (h, w, size)
  for height, out in ((50, 17), (17, 50), (33, 33), (7, 64)):
    image = rng.uniform(0, 100, (height, 5)).astype(np.float32)
    weights = export.bilinear_weights(
      np.arange(out, dtype=np.int32), np.int32(out), np.int32(height), height
    )
    expected = np.asarray(Image.fromarray(image).resize((5, out), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(np.asarray(weights) @ image, expected, atol=2e-4)
  l = rng.uniform(0, 100, (40, 23)).astype(np.float32)  # model_input's mirror padding
  h, w = photo.content_size(40, 23, 32, False)
  rows = export.bilinear_weights(
    export.mirror(np.arange(32, dtype=np.int32), np.int32(h)), np.int32(h), np.int32(40), 40
  )
  cols = export.bilinear_weights(
    export.mirror(np.arange(32, dtype=np.int32), np.int32(w)), np.int32(w), np.int32(23), 23
  )
  np.testing.assert_allclose(
    np.asarray(rows) @ l @ np.asarray(cols).T / 50 - 1,
    photo.model_input(l, 32, False)[..., 0],
    atol=1e-5,
  )


def test_a_missing_onnx_package_is_one_line(vivid, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
  monkeypatch.delitem(sys.modules, "colorgan.inference.onnx_export", raising=False)
  monkeypatch.delattr(colorgan.inference, "onnx_export", raising=False)
  config, variables = vivid
  with pytest.raises(
    errors.ExportError, match=r"needs the onnx package .*pip install -e '\.\[export\]'"
  ):
    export.export(config, variables, step=1, fmt="onnx", output=str(tmp_path / "m.onnx"))
  assert not os.listdir(tmp_path)  # nothing half-written


def _cli(*args):
  return run_module("colorgan.main", "--mode=export", *args)


def test_cli_exports_the_checkpoint(workdir, tmp_path):
  output = tmp_path / "out" / "colorize.onnx"
  result = _cli(f"--workdir={workdir}", "--format=onnx", f"--output={output}")
  assert result.returncode == 0, result.stderr
  assert f"exported the colorize function of step 1 (any height and width) as onnx to {output}" in (
    result.stdout
  )
  info = json.load(open(f"{output}.json"))
  assert info["step"] == 1 and info["opset"] == 18
  # The checkpoint's own (near-gray) generator, through the host path and onnxruntime.
  colorizer = colorize.Colorizer.from_checkpoint(workdir, batch_size=1)
  rgb = np.asarray(Image.open(sources.bundled_photo_paths()[1]).convert("RGB").resize((45, 31)))
  reference = colorizer.colorize_photo(photo.Photo(photo.lightness(rgb), None))
  worst, within = _agreement([runtimes.runner("onnx", str(output))(rgb)], [reference])
  assert within >= 0.999, (worst, within)


@pytest.mark.parametrize(
  "args,message",
  [
    (["--format=onnx"], "--output is required for --mode=export"),
    (
      ["--format=onnx", "--output=OUT/m.onnx", "--export_size=12y"],
      "--export_size=12y is not a size",
    ),
  ],
)
def test_cli_mistakes_are_one_line(workdir, tmp_path, args, message):
  args = [a.replace("OUT", str(tmp_path)) for a in args]
  result = _cli(f"--workdir={workdir}", *args)
  assert result.returncode == 2, result.stderr
  assert message in result.stderr
  assert "Traceback" not in result.stderr


def test_outputs_and_sizes_it_cannot_take(vivid, tmp_path):
  config, variables = vivid
  (tmp_path / "file").write_text("")
  for kwargs, message in (
    ({"fmt": "tflite", "output": str(tmp_path)}, "is a folder: --format=tflite writes one file"),
    ({"fmt": "savedmodel", "output": str(tmp_path / "file")}, "a SavedModel is a folder"),
    (
      {"fmt": "onnx", "output": str(tmp_path / "m.onnx"), "size": 48},
      "--colorize_size=48 must be a multiple of 32",
    ),
    ({"fmt": "coreml", "output": str(tmp_path / "m")}, "--format=coreml is not known"),
  ):
    with pytest.raises(errors.ExportError, match=message):
      export.export(config, variables, step=1, **kwargs)
  assert sorted(os.listdir(tmp_path)) == ["file"]
  for text, expected in (("64", (64, 64)), ("768x1024", (768, 1024)), (None, None)):
    assert export.parse_export_size(text) == expected
  for text in ("0", "12x", "axb", "1x2x3"):
    with pytest.raises(errors.ExportError, match="is not a size"):
      export.parse_export_size(text)


def test_an_output_that_cannot_be_written_is_one_line_before_any_work(
  workdir, vivid, read_only_folder
):
  output = os.path.join(read_only_folder, "colorize.onnx")
  result = _cli(f"--workdir={workdir}", "--format=onnx", f"--output={output}")
  assert result.returncode == 2, result.stderr
  assert result.stderr.splitlines()[-1] == (
    f"colorgan: error: --output={output} cannot be written: Permission denied (a read-only file "
    "system or a missing permission: choose another --output)"
  )
  assert "Traceback" not in result.stderr
  config, variables = vivid
  inside = os.path.join(read_only_folder, "exports", "colorize_savedmodel")  # cannot be made
  with pytest.raises(errors.ExportError, match=f"--output={inside} cannot be created: "):
    export.export(config, variables, step=1, fmt="savedmodel", output=inside)


def test_tflite_export_says_nothing_alarming(workdir, tmp_path):
  """stderr holds colorgan's own lines only: not TensorFlow's "oneDNN custom operations are on"
  (twice, on CPUs where oneDNN is the default) nor the converter's "unsaved custom gradients. Will
  likely fail if a gradient is requested" (twice: it loads the SavedModel twice)."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "TF_ENABLE_ONEDNN"))}
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "colorgan.main",
      "--mode=export",
      f"--workdir={workdir}",
      "--format=tflite",
      f"--output={tmp_path / 'm.tflite'}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(env, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="true"),
  )
  assert result.returncode == 0, result.stderr
  strangers = [
    line
    for line in result.stderr.splitlines()
    if not re.match(r"I\d{4} [\d:.]+ +\d+ (main|checkpointing)\.py:\d+\] ", line)
  ]
  assert not strangers, result.stderr
  assert "oneDNN" not in result.stderr and "gradient" not in result.stderr
