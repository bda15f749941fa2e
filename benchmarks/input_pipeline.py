"""Input pipeline throughput: training crops decoded per second at the config's image size.

  python benchmarks/input_pipeline.py --config=configs/folder.py \\
      --config.data.path=../shared/data/bsds500/train --steps=200
  python benchmarks/input_pipeline.py --config=configs/folder.py \\
      --config.data.path=../shared/data/bsds500/train --steps=200 --train_step   # + the step's rate

Runs this host's training stream of the config (one process: every row of the global batch), skips
--warmup batches (start-up, autotuning), then times --steps batches. With --train_step it also times
the config's training step on this machine's devices, for comparison: the pipeline keeps up when its
images/s is well above the step's.

Prints progress, then as its last line a JSON object: images_per_s, batch_size, image_size, steps,
seconds, source, train_images, cpus, start_s (source check + first batch), cpu_seconds and
images_per_cpu_s (the pipeline's cost, meaningful on a busy machine), load_avg_1min and, with
--train_step, train_step_s, train_images_per_s and feed_ratio (pipeline images/s over the step's).
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/folder.py.", lock_config=True
)
flags.DEFINE_integer("steps", 100, "Batches to time.")
flags.DEFINE_integer("warmup", 10, "Batches read before timing starts.")
flags.DEFINE_bool("train_step", False, "Also time the config's training step (compiles the model).")
flags.DEFINE_integer("train_steps", 3, "Steps timed with --train_step (after 1 to compile).")
FLAGS = flags.FLAGS


def _fail(message: str) -> None:
  print(f"input_pipeline benchmark: error: {message}", file=sys.stderr)
  sys.exit(2)


def time_train_step(config, batch) -> float:
  """Seconds per training step of `config` on this machine's devices (after compiling)."""
  import jax  # pylint: disable=g-import-not-at-top
  from colorgan import models, parallel  # pylint: disable=g-import-not-at-top
  from colorgan.training import step as step_lib  # pylint: disable=g-import-not-at-top

  mesh = parallel.create_mesh()
  generator, discriminator = models.create_generator(config), models.create_discriminator(config)
  with jax.set_mesh(mesh):
    state = step_lib.init_train_state(config, generator, discriminator, mesh)
    step_fn = step_lib.make_train_step(config, generator, discriminator, mesh)
    batch = parallel.global_batch(mesh, batch)
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    print(f"train step: compiled and ran once in {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    for _ in range(FLAGS.train_steps):
      state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / FLAGS.train_steps


def main(argv) -> None:
  del argv
  from benchmarks import timing  # pylint: disable=g-import-not-at-top
  from colorgan import configuration  # pylint: disable=g-import-not-at-top
  from colorgan import errors  # pylint: disable=g-import-not-at-top

  config = FLAGS.config
  if config is None:
    _fail("--config is required, e.g. --config=configs/folder.py")
  try:
    configuration.validate(config)
    result, batch = timing.time_input_pipeline(config, steps=FLAGS.steps, warmup=FLAGS.warmup)
  except errors.ConfigError as e:
    _fail(str(e))
  print(f"pipeline: {result['images_per_s']} images/s", flush=True)
  if FLAGS.train_step:
    step_s = time_train_step(config, batch)
    result["train_step_s"] = round(step_s, 3)
    result["train_images_per_s"] = round(config.batch_size / step_s, 2)
    result["feed_ratio"] = round(result["images_per_s"] / result["train_images_per_s"], 1)
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
