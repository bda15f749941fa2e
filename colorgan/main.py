"""colorgan's entry point.

  python -m colorgan.main --config=configs/quickstart.py --workdir=workdirs/quickstart
  python -m colorgan.main --config=configs/default.py --mode=summary
  python -m colorgan.main --config=configs/default.py --config.batch_size=32 --workdir=DIR
  python -m colorgan.main --mode=evaluate --workdir=DIR                    # JSON as the last line
  python -m colorgan.main --mode=colorize --workdir=DIR --input=photos/ --output_dir=colored/
  python -m colorgan.main --mode=colorize --workdir=DIR --input=p.jpg --hints=p.json --output_dir=c/
  python -m colorgan.main --mode=export --workdir=DIR --format=onnx --output=colorize.onnx
  python -m colorgan.main ... --coordinator_address=HOST:PORT --num_processes=N --process_id=I

Several processes (hosts) join one run through jax.distributed: by the flags above, or by themselves
under SLURM, Open MPI or on a Cloud TPU pod (--distributed=auto; see launch/).

Mistakes a user can make (an unknown config key, a value of the wrong type or out of range, a missing
--workdir) end with one line on stderr naming the key and the fix, and exit status 2.
"""

import contextlib
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
import numpy as np  # noqa: E402

from colorgan import configuration  # noqa: E402

FLAGS = flags.FLAGS
MODES = ("train", "summary", "evaluate", "colorize", "export")
# Without --config these modes use the run's own config (WORKDIR/config.json) via this file.
SAVED_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs", "saved.py")

config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/quickstart.py (add :arg to pass an argument).",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and samples.")
flags.DEFINE_enum("mode", "train", MODES, "train: train (or resume) in --workdir; summary: print "
                  "the networks' parameters and, as the last line, a JSON object of their sizes; "
                  "evaluate: score a checkpoint and the gray baseline on the eval split (JSON as "
                  "the last line); colorize: colorize --input photos into --output_dir; export: "
                  "write the colorize function (photo in, photo out) as --format to --output.")
flags.DEFINE_integer("step", None, "evaluate/colorize/export: the checkpoint step (default: the "
                     "latest).")
flags.DEFINE_multi_string("input", None, "colorize: a photo, a folder (recursive) or a glob; "
                          "repeat the flag for more.")
flags.DEFINE_string("output_dir", None, "colorize: where the colorized photos go (relative paths "
                    "kept); never an input's place.")
flags.DEFINE_enum("output_format", "png", ("png", "jpg"), "colorize: the output file format.")
flags.DEFINE_string("hints", None, "colorize, with a run trained with hints: the colors to use. "
                    "For one photo a .json file ({\"points\": [{\"x\", \"y\", \"rgb\", "
                    "\"size\"}, ...]}, photo pixels) or a .png of the photo's size whose opaque "
                    "pixels are hints; for several, a folder of <name>.json / <name>.png (the "
                    "output's name).")
flags.DEFINE_integer("colorize_size", None, "colorize/export: the size the generator works at (default: "
                     "the run's config.image_size); a multiple of 2**U-Net depth.")
# --mode=export (colorgan/export.py).
flags.DEFINE_enum("format", None, ("savedmodel", "tflite", "onnx", "stablehlo"),
                  "export: savedmodel (TensorFlow, jax2tf), tflite (converted from that SavedModel), "
                  "onnx (opset 18) or stablehlo (jax.export, serialized).")
flags.DEFINE_string("output", None, "export: the file to write (a folder for savedmodel); its "
                    "JSON contract goes to OUTPUT.json.")
flags.DEFINE_string("export_size", None, "export: a fixed input size, N or HxW (default: any height "
                    "and width).")
flags.DEFINE_enum("distributed", "auto", ("auto", "on", "off"),
                  "Join a multi-process run with jax.distributed.initialize(). auto: when "
                  "--coordinator_address is given or SLURM / Open MPI / Cloud TPU started several "
                  "processes; on: always (unset flags are detected from the environment); off: never.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator service.")
flags.DEFINE_integer("num_processes", None, "Number of processes in the run.", lower_bound=1)
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.",
                     lower_bound=0)


class _OnlyColorganInfo(logging_std.Filter):
  """Orbax, JAX and clu log dozens of INFO lines per checkpoint: keep INFO for colorgan's own lines.

  They all log through absl's one logger, so the test is where the record was made: a file of the
  colorgan package itself (not any path with a folder named colorgan in it: a clone or a virtualenv
  under such a folder would let every library's lines through).
  """
  PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

  def filter(self, record: logging_std.LogRecord) -> bool:
    return (record.levelno >= logging_std.WARNING
            or os.path.abspath(record.pathname).startswith(self.PACKAGE_DIR))


def usage_error(message: str) -> None:
  """A mistake in the command: one line, exit status 2."""
  print(f"colorgan: error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def run_error(message: str) -> None:
  """The command was right but the run cannot go on (damaged checkpoint, divergence): exit 1.

  A failed orbax restore leaves coroutines that Python reports as "Exception ignored in ..." with
  their tracebacks when they are collected at exit: the line above already says what went wrong,
  so those reports are not printed.
  """
  print(f"colorgan: error: {message}", file=sys.stderr, flush=True)
  sys.unraisablehook = lambda unraisable: None
  sys.exit(1)


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


def _flag_value(argv: list[str], name: str) -> str | None:
  """The last --name=value or --name value in argv (before absl parses it)."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.partition("=")[2]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _with_saved_config(argv: list[str]) -> list[str]:
  """evaluate/colorize without --config: the run's own config, so --config.KEY overrides apply."""
  mode = _flag_value(argv, "mode")
  if mode not in ("evaluate", "colorize", "export") or _flag_value(argv, "config") is not None:
    return argv
  workdir = _flag_value(argv, "workdir")
  if not workdir:
    usage_error(f"--workdir is required for --mode={mode}: the run to restore, e.g. "
                "--workdir=workdirs/quickstart")
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    usage_error(f"--workdir={workdir} holds no config.json: point --workdir at a training run "
                "(or pass --config)")
  argv = argv[:1] + [f"--config={SAVED_CONFIG}:{os.path.abspath(workdir)}"] + argv[1:]
  sys.argv[:] = argv  # error messages quote the config from sys.argv
  return argv


def _config_keys(config_arg: str) -> list[str]:
  """The dotted keys of the config named by --config=FILE[:ARG] (loaded as config_flags does), or
  [] when it cannot be loaded."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = config_arg.partition(":")
  try:
    spec = importlib.util.spec_from_file_location("colorgan_config_for_error", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    return sorted(configuration.flatten(config))
  except Exception:  # pylint: disable=broad-except  (only a better error message is at stake)
    return []


def _unknown_key_message(argv: list[str], error: Exception) -> str:
  """One line for an override of a key the config lacks: the override, the unknown part of it, and
  the closest keys of the config (ml_collections' own 'Did you mean' is about one level only)."""
  import difflib  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  text = str(error).encode().decode("unicode_escape")  # KeyError quotes its message
  names = re.findall(r"'([A-Za-z0-9_]+)'", text)
  name = names[0] if names else None
  overrides = [a.split("=")[0].removeprefix("--") for a in argv if a.startswith("--config.")]
  override = next((o for o in overrides if name in o.split(".")), None) if name else None
  config_arg = _config_file_arg(argv)
  config_file = config_arg.split(":")[0]
  if override is None:
    return (f"--config.{name or '?'} is not a key of {config_file}; the keys are listed in that "
            "file")
  key = override.removeprefix("config.")
  closest = difflib.get_close_matches(key, _config_keys(config_arg), n=3, cutoff=0.5)
  hint = (f"; the closest keys: {', '.join(closest)}" if closest
          else "; the keys are listed in that file")
  return f"--{override}: {name!r} is not a key of {config_file} (no config.{key}){hint}"


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a config or flag mistake reported in one line (exit 2)."""
  argv = _with_saved_config(argv)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    if "Traceback" in str(e):  # get_config() raised: its own message is the last line
      usage_error(f"--config={_config_file_arg(argv)}: {str(e).strip().splitlines()[-1]}")
    usage_error(_one_line(e) + " (see --helpfull; config keys are listed in the config file)")
  except (AttributeError, KeyError) as e:
    # ml_collections raises these for an override of a key the config does not have.
    usage_error(_unknown_key_message(argv, e))
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
      "fast_layers": models.use_fast_layers(config),  # config.model.fast_layers on this backend
      "backend": jax.default_backend(),
  }


def evaluate_mode(config, workdir: str) -> str:
  """--mode=evaluate: the checkpoint's and the gray baseline's metrics, as one JSON line."""
  from colorgan import checkpointing  # pylint: disable=g-import-not-at-top
  from colorgan.evaluation import evaluator as evaluate  # pylint: disable=g-import-not-at-top
  try:
    result = evaluate.evaluate_checkpoint(config, workdir, FLAGS.step)
  except FileNotFoundError as e:  # no checkpoint (at that step)
    usage_error(f"--workdir={FLAGS.workdir}: {_one_line(e)}")
  except checkpointing.RestoreError as e:
    run_error(str(e))
  except ValueError as e:  # an eval batch the devices cannot split, an empty eval split
    usage_error(_one_line(e))
  return evaluate.to_json(result)


def colorize_mode(config, workdir: str) -> int:
  """--mode=colorize: the exit status (1 when any photo failed)."""
  if not FLAGS.input:
    usage_error("--input is required for --mode=colorize: a photo, a folder or a glob (repeatable)")
  if not FLAGS.output_dir:
    usage_error("--output_dir is required for --mode=colorize, e.g. --output_dir=colorized")
  from colorgan import checkpointing  # pylint: disable=g-import-not-at-top
  from colorgan.inference import colorize  # pylint: disable=g-import-not-at-top
  try:
    work = colorize.plan(FLAGS.input, FLAGS.output_dir, FLAGS.output_format)
  except colorize.PlanError as e:
    usage_error(str(e))
  hint_files = user_hint_files(work)
  try:
    colorizer = colorize.Colorizer.from_checkpoint(workdir, FLAGS.step, size=FLAGS.colorize_size,
                                                   batch_size=config.eval_batch_size)
  except FileNotFoundError as e:
    usage_error(f"--workdir={FLAGS.workdir}: {_one_line(e)}")
  except checkpointing.RestoreError as e:
    run_error(str(e))
  except ValueError as e:  # --colorize_size
    usage_error(_one_line(e))
  if hint_files and not colorizer.takes_hints:
    usage_error(f"--hints={FLAGS.hints}: the generator of {FLAGS.workdir} (step {colorizer.step}) "
                "was trained without hints; train one with --config.hints.enabled=True "
                "(configs/hints.py), or drop --hints")
  failures = colorizer.run(work, hint_files)
  return 1 if failures else 0


def user_hint_files(work) -> dict[str, str]:
  """--hints matched to the plan's photos and read against each photo's size: {photo: hint file}.
  Every problem is a usage error here, before any photo is colorized."""
  if FLAGS.hints is None:
    return {}
  from colorgan import hints as hints_lib  # pylint: disable=g-import-not-at-top
  try:
    hint_files = hints_lib.match_hint_files(FLAGS.hints, [job.source for job in work.jobs],
                                            [job.output for job in work.jobs], work.output_dir)
    hints_lib.check_hint_files(hint_files)
  except hints_lib.HintError as e:
    usage_error(str(e))
  return hint_files


@contextlib.contextmanager
def claim_workdir(workdir: str):
  """Process 0 holds the workdir for the run (colorgan.training.workdir.claim); every process learns whether
  it could, so that a refused multi-process run stops everywhere in one line instead of hanging."""
  import jax  # pylint: disable=g-import-not-at-top
  from colorgan.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  with contextlib.ExitStack() as stack:
    error = None
    if jax.process_index() == 0:
      try:
        stack.enter_context(workdir_lib.claim(workdir))
      except workdir_lib.WorkdirError as e:
        error = str(e)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      refused = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
      if refused and error is None:
        error = f"--workdir={workdir} could not be claimed by process 0: see its log"
    if error:
      usage_error(error)
    yield


def export_mode(workdir: str) -> None:
  """--mode=export: the colorize function in --format at --output, its JSON beside it."""
  if not FLAGS.format:
    usage_error("--format is required for --mode=export: savedmodel, tflite, onnx or stablehlo")
  if not FLAGS.output:
    usage_error(f"--output is required for --mode=export, e.g. --output=colorize.{FLAGS.format}")
  from colorgan import checkpointing  # pylint: disable=g-import-not-at-top
  from colorgan.inference import export  # pylint: disable=g-import-not-at-top
  try:
    fixed = export.parse_export_size(FLAGS.export_size)
    inference = checkpointing.restore_for_inference(workdir, FLAGS.step)
    export.export(inference.config, inference.g_variables, step=inference.step, fmt=FLAGS.format,
                  output=FLAGS.output, size=FLAGS.colorize_size, fixed=fixed)
  except FileNotFoundError as e:
    usage_error(f"--workdir={FLAGS.workdir}: {_one_line(e)}")
  except checkpointing.RestoreError as e:
    run_error(str(e))
  except export.ExportError as e:
    usage_error(str(e))
  shape = "any height and width" if fixed is None else f"{fixed[0]}x{fixed[1]} pixels"
  print(f"exported the colorize function of step {inference.step} ({shape}) as {FLAGS.format} to "
        f"{FLAGS.output}; contract in {FLAGS.output}.json")
  from colorgan import hints as hints_lib  # pylint: disable=g-import-not-at-top
  if hints_lib.enabled(inference.config):
    print("note: this run takes color hints; the export covers automatic colorization only (no "
          "hints): use --mode=colorize --hints or colorgan.serve for hints")


def initialize_distributed() -> None:
  """jax.distributed.initialize() when asked (flags or launcher environment); before any JAX work."""
  from colorgan import parallel  # pylint: disable=g-import-not-at-top
  explicit = {"coordinator_address": FLAGS.coordinator_address,
              "num_processes": FLAGS.num_processes, "process_id": FLAGS.process_id}
  given = [f"--{k}" for k, v in explicit.items() if v is not None]
  if FLAGS.distributed == "off":
    if given:
      usage_error(f"{given[0]} needs --distributed=auto or on, not off")
    return
  launcher = ", ".join(given) if given else parallel.multiprocess_launcher()
  if FLAGS.distributed == "auto" and not launcher:
    return
  import jax  # pylint: disable=g-import-not-at-top
  try:
    jax.distributed.initialize(**explicit)
  except Exception as e:  # pylint: disable=broad-except
    usage_error(f"jax.distributed.initialize() failed (from {launcher or 'the environment'}): "
                f"{_one_line(e)}; check --coordinator_address, --num_processes and --process_id")
  logging.info("Joined a multi-process run (%s)", launcher or "--distributed=on")


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

  initialize_distributed()
  import jax  # pylint: disable=g-import-not-at-top
  from colorgan import parallel  # pylint: disable=g-import-not-at-top
  logging.info("JAX process %d of %d: %d local of %d %s device(s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  from colorgan import models  # pylint: disable=g-import-not-at-top
  logging.info("4x4 convolutions: %s (config.model.fast_layers=%r)",
               "matrix products" if models.use_fast_layers(config) else "flax's nn.Conv",
               config.model.fast_layers)
  if FLAGS.mode == "evaluate":
    print(evaluate_mode(config, workdir))
    return
  if FLAGS.mode == "colorize":
    sys.exit(colorize_mode(config, workdir))
  if FLAGS.mode == "export":
    export_mode(workdir)
    return
  try:
    parallel.check_batch_size(config.batch_size, parallel.create_mesh(config))
  except configuration.ConfigError as e:
    usage_error(str(e))

  from colorgan.training import loop as train  # pylint: disable=g-import-not-at-top  (imports TF and JAX: ~10 s)
  from colorgan import checkpointing  # pylint: disable=g-import-not-at-top
  from colorgan.training import divergence  # pylint: disable=g-import-not-at-top
  from colorgan.training import preemption  # pylint: disable=g-import-not-at-top
  logging.info("colorgan %s: workdir %s", FLAGS.mode, workdir)
  try:
    with claim_workdir(workdir):
      train.train_and_evaluate(config, workdir)
  except configuration.ConfigError as e:  # e.g. the workdir was trained with another config
    usage_error(str(e))
  except preemption.Preempted as e:  # SIGTERM / SIGINT: saved, resumable: a clean exit
    print(f"colorgan: {e}", flush=True)
    sys.exit(0)
  except (divergence.Diverged, checkpointing.RestoreError) as e:
    run_error(str(e))
  logging.info("Done: checkpoints in %s/checkpoints, TensorBoard events in %s, samples in "
               "%s/samples", workdir, workdir, workdir)


def _drop_closed_event_loop_reports() -> None:
  """Drops "RuntimeError: Event loop is closed" reports; passes every other one on.

  When an orbax restore fails, its asyncio loop closes while tensorstore reads are still in flight;
  each read that completes later calls the loop from a tensorstore thread, and tensorstore reports
  the failure as unraisable, a bare traceback. Dozens of them buried the one line that says why the
  restore failed, and on a busy machine they come before it.
  """
  previous = sys.unraisablehook

  def hook(unraisable):
    if (isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"):
      return
    previous(unraisable)

  sys.unraisablehook = hook


def run() -> None:
  _drop_closed_event_loop_reports()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
