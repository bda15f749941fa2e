"""Colorization quality of a fresh run: train N steps on one image folder, evaluate on another.

  python benchmarks/quality.py --config=configs/quickstart.py \
      --train_path=../shared/data/bsds500/train --eval_path=../shared/data/bsds500/val --steps=1500
  python benchmarks/quality.py ... --config.loss.gan_weight=0   # the L1-only objective (D still trains)
  python benchmarks/quality.py ... --config.hints.enabled=True \
      --config.eval.hint_counts='(0,1,2,5,10,20,50)'            # color hints, scored by hint count

Trains with colorgan.training.loop.train_and_evaluate in --workdir (default: a new temporary
folder), then scores the final generator with colorgan.evaluation.evaluator on every photo of
--eval_path (center crops at the
config's image_size). Prints one JSON line: the model's and the gray baseline's metrics, the data and
run sizes, and the wall times (training, evaluation, total).
"""

import functools
import logging as logging_std
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from colorgan import configuration  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "A config file, e.g. configs/quickstart.py.", lock_config=True
)
flags.DEFINE_string("train_path", None, "Folder of training photos (read recursively).")
flags.DEFINE_string("eval_path", None, "Folder of evaluation photos (read recursively).")
flags.DEFINE_integer("steps", None, "Training steps (overrides config.total_steps).")
flags.DEFINE_string("workdir", None, "Where the run goes (default: a new temporary folder).")


# What tf.io.decode_image reads.
class _OnlyColorganInfo(logging_std.Filter):
  """As colorgan.main: orbax, JAX and clu INFO lines drown the run's own."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno >= logging_std.WARNING or f"{os.sep}colorgan{os.sep}" in record.pathname


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_OnlyColorganInfo())
  for name in ("config", "train_path", "eval_path", "steps"):
    if getattr(FLAGS, name) is None:
      sys.exit(f"quality.py: error: --{name} is required")
  config = FLAGS.config
  config.total_steps = FLAGS.steps
  config.eval_every_steps = 0  # evaluated once, after training, on the whole eval folder
  config.num_eval_images = 0
  config.checkpoint_every_steps = max(config.checkpoint_every_steps, FLAGS.steps)
  configuration.validate(config)
  # pylint: disable=g-import-not-at-top  (TensorFlow and JAX load after the flags are checked)
  from colorgan.data import sources

  def image_files(folder):  # what the folder source reads, as absolute paths
    return tuple(os.path.join(folder, p) for p in sources.list_image_files(folder))

  train_paths, eval_paths = image_files(FLAGS.train_path), image_files(FLAGS.eval_path)
  for flag, paths in (("train_path", train_paths), ("eval_path", eval_paths)):
    if not paths:
      sys.exit(
        f"quality.py: error: --{flag}={getattr(FLAGS, flag)} holds no image file "
        f"({', '.join(sources.IMAGE_EXTENSIONS)})"
      )

  import jax
  from colorgan import checkpointing
  from colorgan.evaluation import evaluator
  from colorgan.evaluation import records
  from colorgan import models
  from colorgan import parallel
  from colorgan.training import loop

  # The two folders become the run's data source, whatever config.data.source says.
  folders = sources.Source(
    "folder", sources.FileImages(train_paths), sources.FileImages(eval_paths)
  )

  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="colorgan_quality_")
  logging.info(
    "Training %d steps on %d photos in %s; evaluating on %d photos",
    FLAGS.steps,
    len(train_paths),
    workdir,
    len(eval_paths),
  )
  start = time.time()
  loop.train_and_evaluate(config, workdir, source=folders)
  train_wall = time.time() - start

  start_eval = time.time()
  mesh = parallel.create_mesh()
  inference = checkpointing.restore_for_inference(workdir, sharding=parallel.replicated(mesh))
  predict = functools.partial(models.predict_ab, models.create_generator(inference.config))
  result = evaluator.Evaluator(config, predict, mesh, folders.eval)(
    inference.g_variables, inference.step
  )
  eval_wall = time.time() - start_eval
  records.record(result, workdir)

  overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
  print(
    records.to_json(
      {
        "benchmark": "quality",
        "config": next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), None),
        "overrides": overrides,
        "train_images": len(train_paths),
        "eval_images": result["num_images"],
        "steps": inference.step,
        "image_size": config.image_size,
        "batch_size": config.batch_size,
        "loss": {
          "gan": config.loss.gan,
          "gan_weight": config.loss.gan_weight,
          "l1_weight": config.loss.l1_weight,
        },
        "devices": jax.device_count(),
        "train_wall_s": round(train_wall, 1),
        "steps_per_s": round(FLAGS.steps / train_wall, 3),
        "eval_wall_s": round(eval_wall, 1),
        "wall_s": round(train_wall + eval_wall, 1),
        "ground_truth": result["ground_truth"],
        "model": result["model"],
        "baseline": result["baseline"],
        "hints": config.hints.enabled,
        **({"by_hints": result["by_hints"]} if "by_hints" in result else {}),
        "workdir": workdir,
      }
    )
  )


if __name__ == "__main__":
  app.run(main)
