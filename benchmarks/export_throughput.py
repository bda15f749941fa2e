"""Colorize throughput of each exported format on this CPU, beside the JAX paths.

  python benchmarks/export_throughput.py --config=configs/default.py --repeats=5
  python benchmarks/export_throughput.py --workdir=workdirs/quickstart

The generator comes from --workdir's latest checkpoint, or is freshly initialized from --config
(throughput does not depend on the weights). Every format (colorgan/export.py) is exported to a
temporary folder and run in its own runtime (TensorFlow, the TFLite interpreter, onnxruntime,
jax.export) on a 512x512 and a 1024x768 photo; "colorize" is --mode=colorize's path (numpy/Pillow
around the jitted generator, colorize.Colorizer.colorize_photo from decoded L) and "jax" the exported
function under jax.jit. Prints the median seconds per photo (after one warm-up call) and photos per
second, and as the last line a JSON object of them.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from colorgan import checkpointing  # noqa: E402
from colorgan.inference import colorize  # noqa: E402
from colorgan.inference import export  # noqa: E402
from colorgan.inference import runtimes  # noqa: E402
from colorgan.inference import photo as photo_lib  # noqa: E402
from colorgan.data import sources  # noqa: E402
from colorgan import models  # noqa: E402

SIZES = ((512, 512), (768, 1024))  # (height, width): 512x512 and 1024x768 (landscape)


def load_config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def generator_variables(args):
  if args.workdir:
    inference = checkpointing.restore_for_inference(args.workdir)
    return inference.config, jax.device_get(inference.g_variables)
  config = load_config(args.config)
  size = config.image_size
  variables = models.create_generator(config).init(
    jax.random.key(0), jnp.zeros((1, size, size, 1)), train=False
  )
  return config, jax.device_get(variables)


def seconds_per_call(fn, photo, repeats: int) -> float:
  fn(photo)  # warm-up: compilation, allocation
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn(photo)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/default.py")
  parser.add_argument("--workdir", default=None)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--formats", default=",".join(export.FORMATS))
  args = parser.parse_args()
  config, variables = generator_variables(args)
  source = Image.open(sources.bundled_photo_paths()[0]).convert("RGB")
  photos = {
    f"{w}x{h}": np.asarray(source.resize((w, h), Image.Resampling.BILINEAR)) for h, w in SIZES
  }
  colorizer = colorize.Colorizer(config, variables, step=0, batch_size=1)
  runners = {
    "colorize": lambda rgb: colorizer.colorize_photo(
      photo_lib.Photo(photo_lib.lightness(rgb), None)
    ),
    "jax": jax.jit(export.colorize_function(config, variables)),
  }
  export_seconds = {}
  with tempfile.TemporaryDirectory() as folder:
    for fmt in args.formats.split(","):
      start = time.perf_counter()
      path = os.path.join(folder, f"colorize.{fmt}")
      export.export(config, variables, step=0, fmt=fmt, output=path)
      export_seconds[fmt] = round(time.perf_counter() - start, 1)
      runners[fmt] = runtimes.runner(fmt, path)
    results = {}
    print(
      f"generator {config.model.generator} at {config.image_size} px, {jax.device_count()} "
      f"{jax.default_backend()} device(s), {os.cpu_count()} CPU(s); median of {args.repeats}"
    )
    print(f"{'path':<12}" + "".join(f"{name:>22}" for name in photos))
    for name, run in runners.items():
      results[name] = {}
      for size, photo in photos.items():
        seconds = seconds_per_call(lambda rgb, run=run: np.asarray(run(rgb)), photo, args.repeats)
        results[name][size] = {"seconds": round(seconds, 4), "photos_per_s": round(1 / seconds, 2)}
      print(
        f"{name:<12}"
        + "".join(
          f"{r['seconds']:>10.3f} s {r['photos_per_s']:>6.2f}/s" for r in results[name].values()
        )
      )
  print(
    json.dumps(
      {
        "image_size": config.image_size,
        "generator": config.model.generator,
        "cpus": os.cpu_count(),
        "export_seconds": export_seconds,
        "results": results,
      }
    )
  )


if __name__ == "__main__":
  main()
