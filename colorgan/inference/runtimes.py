"""Running an export in its format's own runtime (the parity checks and benchmarks): LiteRT or
TensorFlow for savedmodel/tflite, onnxruntime for onnx, jax.export for stablehlo. Each runtime is
imported only when asked for; onnxruntime and LiteRT are test extras."""

from typing import Callable
import warnings

import numpy as np

from colorgan import errors
from colorgan.inference.export import FORMATS
from colorgan.inference.export import INPUT_NAME
from colorgan.inference.export import OUTPUT_NAME


def _tflite_interpreter(path: str):
  """LiteRT's interpreter (`pip install ai-edge-litert`, a test extra), TFLite's maintained runtime;
  without it, TensorFlow's tf.lite.Interpreter, the same engine, which warns that it is deprecated."""
  try:
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  except ImportError:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    with warnings.catch_warnings():  # "use ai_edge_litert instead": not installed here
      warnings.simplefilter("ignore", UserWarning)
      return tf.lite.Interpreter(model_path=path)
  return litert.Interpreter(model_path=path)


def runner(fmt: str, path: str) -> Callable[[np.ndarray], np.ndarray]:
  """An export loaded in its own runtime: uint8 [H, W, 3] -> uint8 [H, W, 3] (numpy).

  savedmodel: TensorFlow; tflite: LiteRT (ai-edge-litert, a test extra; TensorFlow's TFLite
  interpreter without it); onnx: onnxruntime (a test extra, or `pip install onnxruntime`);
  stablehlo: jax.export.deserialize.
  """
  if fmt == "savedmodel":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    signature = tf.saved_model.load(path).signatures["serving_default"]
    return lambda rgb: signature(**{INPUT_NAME: tf.constant(rgb)})[OUTPUT_NAME].numpy()
  if fmt == "tflite":
    interpreter = _tflite_interpreter(path)
    [source], [target] = interpreter.get_input_details(), interpreter.get_output_details()

    def run_tflite(rgb):
      if tuple(source["shape"]) != rgb.shape:
        interpreter.resize_tensor_input(source["index"], rgb.shape)
        interpreter.allocate_tensors()
        source["shape"] = np.array(rgb.shape)
      interpreter.set_tensor(source["index"], rgb)
      interpreter.invoke()
      return interpreter.get_tensor(target["index"])

    interpreter.allocate_tensors()
    return run_tflite
  if fmt == "onnx":
    try:
      import onnxruntime  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise errors.ExportError(
        "running an ONNX export needs onnxruntime: pip install onnxruntime"
      ) from e
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda rgb: session.run([OUTPUT_NAME], {INPUT_NAME: rgb})[0]
  if fmt == "stablehlo":
    from jax import export as jax_export  # pylint: disable=g-import-not-at-top

    with open(path, "rb") as f:
      exported = jax_export.deserialize(bytearray(f.read()))
    return lambda rgb: np.asarray(exported.call(rgb))
  raise errors.ExportError(f"--format={fmt} is not known: use one of {', '.join(FORMATS)}")
