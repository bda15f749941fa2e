"""Export the whole colorize function, photo in, photo out (`--mode=export`).

What is exported is `--mode=colorize`'s computation (colorize.py, photo.py) for one photo, written
in jax.numpy so that it traces with a dynamic height and width:
  uint8 [H, W, 3] (gray replicated, or RGB whose color is discarded) -> uint8 RGB [H, W, 3].
Each Pillow BILINEAR resize (antialiased when shrinking) is two matrix products whose weights are
built from iotas and the traced sizes, the mirror padding is index arithmetic, the generator runs in
inference mode (running BatchNorm statistics, no dropout; the EMA when the run kept one), and the
photo's own full-resolution L is joined with the upsampled ab, out-of-gamut chroma reduced by
bisection (color.lab_to_srgb_uint8, as photo.compose).

Formats (`FORMATS`): savedmodel (jax2tf, serving signature), tflite (converted from that
SavedModel), onnx (onnx_export.py, from the jaxpr) and stablehlo (jax.export, serialized). Each
export writes `<output>.json` beside it: the config, checkpoint step, format and input/output
contract.
"""

import contextlib
import functools
import json
import logging
import os
import shutil
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from colorgan import color
from colorgan import configuration
from colorgan import errors
from colorgan import fileio
from colorgan import models
from colorgan.models import vividness as vividness_lib
from colorgan.inference import photo

FORMATS = ("savedmodel", "tflite", "onnx", "stablehlo")
# What `pip install` brings a format's converter (the `export` extra has them all).
EXTRA = "pip install -e '.[export]'"
INPUT_NAME, OUTPUT_NAME = "image", "colorized"
ONNX_OPSET = 18


# ----------------------------------------------------------------------------- the function
def content_size(height, width, size: int, squash: bool):
  """photo.content_size on traced int32 sizes: (h, w) of the photo inside size x size.

  round(n * size / long) with Python's round-half-to-even, in exact integer arithmetic.
  """
  if squash:
    return jnp.int32(size), jnp.int32(size)
  longest = jnp.maximum(height, width)

  def scaled(n):
    numerator = n * size
    quotient, remainder = numerator // longest, numerator % longest
    up = (2 * remainder > longest) | ((2 * remainder == longest) & (quotient % 2 == 1))
    return jnp.clip(quotient + up.astype(jnp.int32), 1, size)

  return scaled(height), scaled(width)


def mirror(index, n):
  """np.pad(mode="symmetric") as indices: position `index` of the padded axis reads `n`'s entry."""
  period = index % (2 * n)
  return jnp.where(period < n, period, 2 * n - 1 - period)


def bilinear_weights(out_index, out_count, in_count, in_extent: int):
  """Pillow's BILINEAR resize of one axis (in_count -> out_count samples) as a matrix.

  Pillow's filter: output o reads the inputs i around center = (o + 0.5) * in_count / out_count
  with the triangle weight max(0, 1 - |i + 0.5 - center| / max(1, scale)), normalized to sum 1
  (so shrinking averages, i.e. antialiases).

  Args:
    out_index: int32 [n]: the output positions wanted (any order; mirror() for padding).
    out_count: int32 scalar: the resize's output size.
    in_count: int32 scalar: the input's size; columns at and past it get weight 0.
    in_extent: the length of the input axis the matrix multiplies (>= in_count).

  Returns:
    float32 [n, in_extent]: resized = weights @ input.
  """
  scale = in_count.astype(jnp.float32) / out_count.astype(jnp.float32)
  support = jnp.maximum(scale, 1.0)
  center = (out_index.astype(jnp.float32) + 0.5) * scale
  inputs = jnp.arange(in_extent, dtype=jnp.int32)
  distance = (inputs.astype(jnp.float32)[None, :] + 0.5 - center[:, None]) / support
  weights = jnp.where(inputs[None, :] < in_count, jnp.maximum(0.0, 1.0 - jnp.abs(distance)), 0.0)
  return weights / jnp.sum(weights, axis=1, keepdims=True)


def colorize_image(apply_generator: Callable, rgb, *, size: int, squash: bool):
  """--mode=colorize's result for one photo, traceable with a dynamic height and width.

  Args:
    apply_generator: model-scale L [1, size, size, 1] -> model-scale ab [1, size, size, 2].
    rgb: uint8 [H, W, 3]; its color is discarded.
    size: the generator's input size.
    squash: data.resize_mode == "resize": the photo squashed to size x size, not padded.

  Returns:
    uint8 [H, W, 3]: the colorized photo, with rgb's own lightness.
  """
  height, width = rgb.shape[0], rgb.shape[1]
  h_in, w_in = jnp.asarray(height, jnp.int32), jnp.asarray(width, jnp.int32)
  l = jnp.unstack(color.rgb_to_lab(rgb.astype(jnp.float32) / 255.0), axis=-1)[0]  # [H, W]
  h, w = content_size(h_in, w_in, size, squash)
  # photo.model_input: resize to (h, w), then mirror-pad to size x size (Pillow: rows first).
  positions = jnp.arange(size, dtype=jnp.int32)
  down_x = bilinear_weights(mirror(positions, w), w, w_in, width)  # [size, W]
  down_y = bilinear_weights(mirror(positions, h), h, h_in, height)  # [size, H]
  small = down_y @ (l @ down_x.T)  # [size, size]
  ab = apply_generator(color.scale_l(small)[None, :, :, None])[0]  # [size, size, 2]
  # photo.upsample_ab: the photo's (h, w) corner of ab, resized to (H, W).
  up_x = bilinear_weights(jnp.arange(width, dtype=jnp.int32), w_in, w, size)  # [W, size]
  up_y = bilinear_weights(jnp.arange(height, dtype=jnp.int32), h_in, h, size)  # [H, size]
  a, b = (up_y @ (channel @ up_x.T) for channel in jnp.unstack(color.unscale_ab(ab), axis=-1))
  return color.lab_to_srgb_uint8(l, a, b)  # photo.compose, every pixel through the bisection


def inference_generator(config: ml_collections.ConfigDict):
  """The run's generator for export: plain convolutions (the fast_layers matmul formulation has the
  same parameters and outputs, and its im2col reshapes would only obscure the exported graph)."""
  return models.create_generator(config, fast_layers=False)


def colorize_function(
  config: ml_collections.ConfigDict,
  g_variables: dict,
  size: int | None = None,
  chroma_gain: float = 1.0,
  temperature: float = 1.0,
) -> Callable:
  """uint8 [H, W, 3] -> uint8 [H, W, 3] with the weights (and the vividness's chroma gain) as
  constants (what is exported)."""
  size = size or config.image_size
  generator = inference_generator(config)
  g_variables = jax.device_get(g_variables)
  apply = functools.partial(
    models.predict_ab, generator, g_variables, chroma_gain=chroma_gain, temperature=temperature
  )
  squash = config.data.resize_mode == "resize"
  return lambda rgb: colorize_image(apply, rgb, size=size, squash=squash)


# ----------------------------------------------------------------------------- the formats
def parse_export_size(text: str | None) -> tuple[int, int] | None:
  """--export_size: None (dynamic), "N" (N x N) or "HxW" -> (height, width).

  Raises:
    errors.ExportError: not of that form, or a side < 1.
  """
  if not text:
    return None
  parts = text.lower().split("x")
  try:
    height, width = (int(parts[0]), int(parts[0])) if len(parts) == 1 else map(int, parts)
  except ValueError:
    height = width = 0
  if len(parts) > 2 or height < 1 or width < 1:
    raise errors.ExportError(
      f"--export_size={text} is not a size: use N (N x N pixels) or HxW, e.g. 768x1024"
    )
  return height, width


def input_shape(fixed: tuple[int, int] | None) -> str:
  """The input's shape in jax.export's syntax: symbolic height and width unless fixed."""
  return "height, width, 3" if fixed is None else f"{fixed[0]}, {fixed[1]}, 3"


def _export_stablehlo(fn: Callable, shape: str, path: str) -> None:
  from jax import export as jax_export  # pylint: disable=g-import-not-at-top

  spec = jax.ShapeDtypeStruct(jax_export.symbolic_shape(shape), jnp.uint8)
  exported = jax_export.export(jax.jit(fn), platforms=("cpu", "cuda", "tpu"))(spec)
  with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(exported.serialize())


def _saved_model(fn: Callable, shape: str, path: str, platforms: Sequence[str]) -> None:
  """jax2tf: a tf.Module whose serving signature maps {"image": uint8} to {"colorized": uint8}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top

  dims = [None if d.strip() in ("height", "width") else int(d) for d in shape.split(",")]
  converted = jax2tf.convert(
    fn, polymorphic_shapes=[f"({shape})"], native_serialization_platforms=tuple(platforms)
  )
  module = tf.Module()
  module.colorize = tf.function(
    lambda image: {OUTPUT_NAME: converted(image)},
    autograph=False,
    input_signature=[tf.TensorSpec(dims, tf.uint8, name=INPUT_NAME)],
  )
  tf.saved_model.save(module, path, signatures={"serving_default": module.colorize})


def _export_savedmodel(fn: Callable, shape: str, path: str) -> None:
  with fileio.atomic_path(path) as tmp:
    _saved_model(fn, shape, tmp, ("cpu", "cuda", "tpu"))


class _NoGradientWarning(logging.Filter):
  """Drops TensorFlow's "Importing a function (...) with ops with unsaved custom gradients. Will
  likely fail if a gradient is requested.": the converter loads the SavedModel twice, and jax2tf's
  functions carry custom gradients that a forward-only export never asks for."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "unsaved custom gradients" not in record.getMessage()


@contextlib.contextmanager
def _without_gradient_warnings():
  # TensorFlow logs it through absl's logger (tensorflow.python.saved_model.function_deserialization).
  loggers, quiet = (
    (logging.getLogger("absl"), logging.getLogger("tensorflow")),
    _NoGradientWarning(),
  )
  for logger in loggers:
    logger.addFilter(quiet)
  try:
    yield
  finally:
    for logger in loggers:
      logger.removeFilter(quiet)


def _export_tflite(fn: Callable, shape: str, path: str) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with fileio.atomic_path(path) as tmp:
    # The TFLite converter lowers the SavedModel's StableHLO to TFLite ops; it takes one platform.
    _saved_model(fn, shape, tmp + ".savedmodel", ("cpu",))
    try:
      with _without_gradient_warnings():
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(tmp + ".savedmodel").convert()
    except Exception as e:  # pylint: disable=broad-except  (the converter raises many kinds)
      lines = [line for line in str(e).splitlines() if "error" in line.lower()] or [str(e)]
      hint = " (or try a fixed --export_size=HxW)" if "height" in shape else ""
      raise errors.ExportError(
        f"--format=tflite: the TFLite converter cannot take this model: "
        f"{' '.join(lines[0].split())[:300]}{hint}"
      ) from e
    finally:
      shutil.rmtree(tmp + ".savedmodel", ignore_errors=True)
    with open(tmp, "wb") as f:
      f.write(flatbuffer)


def _export_onnx(fn: Callable, shape: str, path: str) -> None:
  try:
    from colorgan.inference import onnx_export  # pylint: disable=g-import-not-at-top
    from colorgan.inference import onnx_ops  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.ExportError(
      f"--format=onnx needs the onnx package ({e.name} is missing): {EXTRA}"
    ) from e
  try:
    model = onnx_export.to_onnx(
      fn, shape, jnp.uint8, input_name=INPUT_NAME, output_name=OUTPUT_NAME, opset=ONNX_OPSET
    )
  except onnx_ops.UnsupportedError as e:
    raise errors.ExportError(
      f"--format=onnx cannot write this generator yet: {e} has no ONNX translation "
      "(colorgan/inference/onnx_ops.py); use --format=savedmodel or stablehlo"
    ) from None
  with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(model.SerializeToString())


_WRITERS = {
  "savedmodel": _export_savedmodel,
  "tflite": _export_tflite,
  "onnx": _export_onnx,
  "stablehlo": _export_stablehlo,
}
_HOW_TO_RUN = {
  "savedmodel": "tf.saved_model.load(path).signatures['serving_default'](image=rgb)['colorized']",
  "tflite": "ai_edge_litert.interpreter.Interpreter(model_path=path) (pip install "
  "ai-edge-litert): resize_tensor_input(0, [H, W, 3]), allocate_tensors, set_tensor, "
  "invoke, get_tensor",
  "onnx": "onnxruntime.InferenceSession(path).run(['colorized'], {'image': rgb})[0]",
  "stablehlo": "jax.export.deserialize(open(path, 'rb').read()).call(rgb)",
}


def contract(fmt: str, size: int, squash: bool, fixed: tuple[int, int] | None) -> dict:
  """The input/output contract written into the JSON beside an export."""
  shape = ["height", "width", 3] if fixed is None else [fixed[0], fixed[1], 3]
  return {
    "input": {
      "name": INPUT_NAME,
      "dtype": "uint8",
      "shape": shape,
      "meaning": "sRGB photo; gray replicated into 3 channels, or RGB whose color is "
      "discarded (only its CIE L is used)",
    },
    "output": {
      "name": OUTPUT_NAME,
      "dtype": "uint8",
      "shape": shape,
      "meaning": "the colorized sRGB photo: the input's own full-resolution L, the "
      "generator's ab upsampled bilinearly, out-of-gamut chroma reduced",
    },
    "dynamic_shape": fixed is None,
    "model_size": size,
    "resize": "squash to model_size x model_size"
    if squash
    else "long side to model_size, mirror-padded to a square",
    "run": _HOW_TO_RUN[fmt],
  }


def check_output(fmt: str, output: str) -> None:
  """--output checked before any work: of the format's kind (a file, or a folder for savedmodel),
  and in a folder that exists or can be created, and can be written.

  Raises:
    errors.ExportError: one line naming --output and the fix.
  """
  if fmt == "savedmodel" and os.path.exists(output) and not os.path.isdir(output):
    raise errors.ExportError(
      f"--output={output} is a file: a SavedModel is a folder, name another path"
    )
  if fmt != "savedmodel" and os.path.isdir(output):
    raise errors.ExportError(f"--output={output} is a folder: --format={fmt} writes one file")
  # The export and its JSON are written beside `output` (fileio.atomic_path), never into it.
  photo.check_writable(
    os.path.dirname(os.path.abspath(output)), "--output", output, errors.ExportError
  )


def export(
  config: ml_collections.ConfigDict,
  g_variables: dict,
  *,
  step: int,
  fmt: str,
  output: str,
  size: int | None = None,
  fixed: tuple[int, int] | None = None,
  vividness: vividness_lib.Setting | None = None,
) -> dict:
  """Writes the colorize function in `fmt` to `output` and its JSON to `output + ".json"`.

  Args:
    config: the run's config; g_variables: its generator's {"params", "batch_stats"}; step: the
      checkpoint's step (recorded).
    fmt: one of FORMATS.
    output: the file (or, for savedmodel, the folder) to write; replaced atomically.
    size: the generator's input size (default config.image_size).
    fixed: (height, width) of a fixed-size export; None: any height and width.
    vividness: the Setting (models.vividness.resolve) whose chroma gain is baked into the export
      (its weights are the caller's: g_variables); recorded in the JSON.

  Returns:
    The JSON written beside the export.

  Raises:
    errors.ExportError: an unknown format, a size the U-Net cannot take, a missing extra, or an
      output that is in the way or cannot be written (check_output); the message names the fix.
  """
  if fmt not in FORMATS:
    raise errors.ExportError(f"--format={fmt} is not known: use one of {', '.join(FORMATS)}")
  size = size or config.image_size
  multiple = 2 ** configuration.generator_depth(config)
  if size < multiple or size % multiple:
    use = max(multiple, size // multiple * multiple)
    raise errors.ExportError(
      f"--colorize_size={size} must be a multiple of {multiple} (2**U-Net "
      f"depth of this run): use {use}"
    )
  check_output(fmt, output)
  vivid = vividness or vividness_lib.Setting(None)
  fn = colorize_function(config, g_variables, size, vivid.chroma_gain, vivid.temperature)
  _WRITERS[fmt](fn, input_shape(fixed), output)
  info = {
    "format": fmt,
    "step": step,
    "contract": contract(fmt, size, config.data.resize_mode == "resize", fixed),
    "config": config.to_dict(),
  }
  if vividness:
    info.update(vividness.describe())
  if fmt == "onnx":
    info["opset"] = ONNX_OPSET
  if fmt == "savedmodel":
    info["signature"] = "serving_default"
  if fmt in ("savedmodel", "stablehlo"):
    info["platforms"] = ["cpu", "cuda", "tpu"]
  fileio.write_text(output + ".json", json.dumps(info, indent=2) + "\n")
  return info
