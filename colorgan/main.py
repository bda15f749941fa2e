"""colorgan's entry point.

  python -m colorgan.main --config=configs/quickstart.py --workdir=workdirs/quickstart
  python -m colorgan.main --config=configs/default.py --mode=summary
  python -m colorgan.main --config=configs/default.py --config.batch_size=32 --workdir=DIR

Mistakes a user can make (an unknown config key, a value of the wrong type or out of range, a missing
--workdir) end with one line on stderr naming the key and the fix, and exit status 2.
"""

import functools
import json
import logging as logging_std
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here: quiet its logs

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from colorgan import configuration  # noqa: E402

FLAGS = flags.FLAGS
MODES = ("train", "summary")

config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/quickstart.py (add :arg to pass an argument).",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and samples.")
flags.DEFINE_enum("mode", "train", MODES, "train: train (or resume) in --workdir; summary: print "
                  "the networks' parameters and, as the last line, a JSON object of their sizes.")


class _OnlyColorganInfo(logging_std.Filter):
  """Orbax, JAX and clu log dozens of INFO lines per checkpoint: keep INFO for colorgan's own lines."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno >= logging_std.WARNING or f"{os.sep}colorgan{os.sep}" in record.pathname


def usage_error(message: str) -> None:
  print(f"colorgan: error: {message}", file=sys.stderr)
  sys.exit(2)


def _one_line(error: Exception) -> str:
  text = " ".join(str(error).split())
  return text.removeprefix("Flags parsing error: ")


def _config_file_arg(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.partition("=")[2]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return "?"


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a config or flag mistake reported in one line (exit 2)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    if "Traceback" in str(e):  # get_config() raised: its own message is the last line
      usage_error(f"--config={_config_file_arg(argv)}: {str(e).strip().splitlines()[-1]}")
    usage_error(_one_line(e) + " (see --helpfull; config keys are listed in the config file)")
  except (AttributeError, KeyError) as e:
    # ml_collections raises these for an override of a key the config does not have.
    key = str(e).strip("\"'").split("'")[0]
    overrides = [a.split("=")[0] for a in argv if a.startswith("--config.") and key in a]
    usage_error(f"{overrides[0] if overrides else '--config.' + key}: {key!r} is not a key of "
                f"{_config_file_arg(argv)}; the keys are listed in that file")
  except Exception as e:  # pylint: disable=broad-except
    usage_error(f"--config={_config_file_arg(argv)}: {type(e).__name__}: {_one_line(e)}")
  return []


def load_config(argv: list[str]):
  """FLAGS.config; a config file that failed to load surfaces here (config_flags defers it)."""
  try:
    config = FLAGS.config
    if config is not None:
      config.keys()
    return config
  except Exception as e:  # pylint: disable=broad-except
    reason = _one_line(e).removeprefix("Configuration is not available because of an earlier "
                                      "failure to load: ")
    if "No such file" in reason:
      reason = "no such file"
    usage_error(f"--config={_config_file_arg(argv)}: {reason}")


def summary(config) -> dict:
  """Parameter overview of both networks (shapes only: nothing is allocated)."""
  from clu import parameter_overview  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from colorgan import models  # pylint: disable=g-import-not-at-top

  generator = models.create_generator(config)
  discriminator = models.create_discriminator(config)
  size = config.image_size
  l = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
  ab = jax.ShapeDtypeStruct((1, size, size, 2), jnp.float32)
  rng = jax.random.key(0)
  g_vars = jax.eval_shape(functools.partial(generator.init, train=False), rng, l)
  d_vars = jax.eval_shape(functools.partial(discriminator.init, train=False), rng, l, ab)
  logits = jax.eval_shape(functools.partial(discriminator.apply, train=False), d_vars, l, ab)
  for name, variables in (("Generator", g_vars), ("Discriminator", d_vars)):
    print(f"{name} ({type(generator if name == 'Generator' else discriminator).__name__}):")
    print(parameter_overview.get_parameter_overview(variables["params"], include_stats=False))
  count = lambda tree: sum(int(x.size) for x in jax.tree.leaves(tree))  # noqa: E731
  return {
      "generator": config.model.generator,
      "generator_params": count(g_vars["params"]),
      "discriminator": config.model.discriminator,
      "discriminator_params": count(d_vars["params"]),
      "discriminator_logits_shape": list(logits.shape[1:3]),
      "image_size": size,
      "unet_num_downs": configuration.generator_depth(config),
  }


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    usage_error(f"unexpected argument(s) {' '.join(argv[1:])}: config values are set as "
                "--config.KEY=VALUE")
  logging.get_absl_handler().addFilter(_OnlyColorganInfo())
  config = load_config(sys.argv)
  if config is None:
    usage_error("--config is required, e.g. --config=configs/quickstart.py")
  try:
    configuration.validate(config)
  except configuration.ConfigError as e:
    usage_error(str(e))

  if FLAGS.mode == "summary":
    print(json.dumps(summary(config)))
    return

  if not FLAGS.workdir:
    usage_error(f"--workdir is required for --mode={FLAGS.mode}, e.g. --workdir=workdirs/run1")
  workdir = os.path.abspath(FLAGS.workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    usage_error(f"--workdir={FLAGS.workdir} exists and is not a directory")

  from colorgan import train  # pylint: disable=g-import-not-at-top  (imports TF and JAX: ~10 s)
  from colorgan import checkpointing  # pylint: disable=g-import-not-at-top
  from colorgan import divergence  # pylint: disable=g-import-not-at-top
  from colorgan import preemption  # pylint: disable=g-import-not-at-top
  logging.info("colorgan %s: workdir %s", FLAGS.mode, workdir)
  try:
    train.train_and_evaluate(config, workdir)
  except configuration.ConfigError as e:  # e.g. the workdir was trained with another config
    usage_error(str(e))
  except preemption.Preempted as e:  # SIGTERM / SIGINT: saved, resumable: a clean exit
    print(f"colorgan: {e}", flush=True)
    sys.exit(0)
  except (divergence.Diverged, checkpointing.RestoreError) as e:
    print(f"colorgan: error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  logging.info("Done: checkpoints in %s/checkpoints, TensorBoard events in %s, samples in "
               "%s/samples", workdir, workdir, workdir)


def run() -> None:
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
