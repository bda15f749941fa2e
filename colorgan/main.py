"""colorgan's entry point.

  python -m colorgan.main --config=configs/quickstart.py --workdir=workdirs/quickstart
  python -m colorgan.main --config=configs/default.py --mode=summary
  python -m colorgan.main --config=configs/default.py --config.batch_size=32 --workdir=DIR
  python -m colorgan.main --mode=evaluate --workdir=DIR                    # JSON as the last line
  python -m colorgan.main --mode=evaluate --workdir=DIR --input=my_photos/   # every photo there
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
import json
import os
import sys

os.environ.setdefault(
  "TF_CPP_MIN_LOG_LEVEL", "2"
)  # TensorFlow only feeds data here: quiet its logs

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from colorgan import cli  # noqa: E402
from colorgan import configuration  # noqa: E402
from colorgan import errors  # noqa: E402

FLAGS = flags.FLAGS
MODES = ("train", "summary", "evaluate", "colorize", "export")
RESTORE_MODES = ("evaluate", "colorize", "export")  # the modes that restore --workdir's checkpoint

config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file, e.g. configs/quickstart.py (add :arg to pass an argument).",
  lock_config=True,
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and samples.")
flags.DEFINE_enum(
  "mode",
  "train",
  MODES,
  "train: train (or resume) in --workdir; summary: print "
  "the networks' parameters and, as the last line, a JSON object of their sizes; "
  "evaluate: score a checkpoint and the gray baseline on the eval split or "
  "--input (JSON as the last line); colorize: colorize --input photos into "
  "--output_dir; export: write the colorize function (photo in, photo out) as "
  "--format to --output.",
)
flags.DEFINE_integer(
  "step", None, "evaluate/colorize/export: the checkpoint step (default: the latest)."
)
flags.DEFINE_multi_string(
  "input",
  None,
  "colorize: a photo, a folder (recursive) or a glob; "
  "repeat the flag for more. evaluate: score every photo of these instead "
  "of the eval split.",
)
flags.DEFINE_string(
  "output_dir",
  None,
  "colorize: where the colorized photos go (relative paths kept); never an input's place.",
)
flags.DEFINE_enum("output_format", "png", ("png", "jpg"), "colorize: the output file format.")
flags.DEFINE_string(
  "hints",
  None,
  "colorize, with a run trained with hints: the colors to use. "
  'For one photo a .json file ({"points": [{"x", "y", "rgb", '
  '"size"}, ...]}, photo pixels) or a .png of the photo\'s size whose opaque '
  "pixels are hints; for several, a folder of <name>.json / <name>.png (the "
  "output's name).",
)
flags.DEFINE_enum(
  "temporal",
  "ema",
  ("none", "ema", "hints"),
  "colorize, videos: none: frame by frame; ema: the previous frame's colors carried "
  "along the optical flow where it is reliable; hints: those colors given to a "
  "generator trained with hints as hint points.",
)
flags.DEFINE_bool(
  "resume",
  False,
  "colorize, videos: continue an interrupted video from its "
  "partial output (same settings); the result equals one uninterrupted run.",
)
flags.DEFINE_bool(
  "video_lossless",
  False,
  "colorize, videos: encode losslessly (H.264 in RGB at qp 0; VP9 lossless in "
  "webm): every frame exactly as colorized, in files many times larger.",
)
flags.DEFINE_integer(
  "colorize_size",
  None,
  "colorize/export: the size the generator works at (default: "
  "the run's config.image_size); a multiple of 2**U-Net depth.",
)
flags.DEFINE_float(
  "vividness",
  None,
  "colorize/evaluate/export: 0 (the run's most accurate colors) to 1 (as colourful as the "
  'photos), README "Recipes"; default: the run\'s own, chosen on its validation photos '
  "(WORKDIR/vividness.json), or the generator's output as it is when the run has none.",
)
# --mode=export (colorgan/export.py).
flags.DEFINE_enum(
  "format",
  None,
  ("savedmodel", "tflite", "onnx", "stablehlo"),
  "export: savedmodel (TensorFlow, jax2tf), tflite (converted from that SavedModel), "
  "onnx (opset 18) or stablehlo (jax.export, serialized).",
)
flags.DEFINE_string(
  "output",
  None,
  "export: the file to write (a folder for savedmodel); its JSON contract goes to OUTPUT.json.",
)
flags.DEFINE_string(
  "export_size", None, "export: a fixed input size, N or HxW (default: any height and width)."
)
flags.DEFINE_enum(
  "distributed",
  "auto",
  ("auto", "on", "off"),
  "Join a multi-process run with jax.distributed.initialize(). auto: when "
  "--coordinator_address is given or SLURM / Open MPI / Cloud TPU started several "
  "processes; on: always (unset flags are detected from the environment); off: never.",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator service.")
flags.DEFINE_integer("num_processes", None, "Number of processes in the run.", lower_bound=1)
flags.DEFINE_integer(
  "process_id", None, "This process's index, 0 .. num_processes - 1.", lower_bound=0
)


@cli.exit_on_error
def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a config or flag mistake reported in one line (exit 2)."""
  # Without --config these modes use the run's own config (summary only when given --workdir).
  argv = cli.with_saved_config(argv, required=RESTORE_MODES, optional=("summary",))
  try:
    return FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  (absl's, config_flags' and the config's)
    raise errors.UsageError(cli.config_flags_message(argv, e)) from None


def load_config(argv: list[str]):
  """FLAGS.config; a config file that failed to load surfaces here (config_flags defers it)."""
  try:
    config = FLAGS.config
    if config is not None:
      config.keys()
    return config
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UsageError(cli.config_load_message(argv, e)) from None


def summary(config) -> dict:
  """--mode=summary: prints both networks' parameter tables; returns their sizes (the JSON line).

  With --workdir and no --config, `config` is the run's own (WORKDIR/config.json)."""
  from colorgan import models  # pylint: disable=g-import-not-at-top

  tables, sizes = models.summarize(config)
  print(tables)
  return sizes


def evaluate_mode(config, workdir: str) -> str:
  """--mode=evaluate: the checkpoint's and the gray baseline's metrics, as one JSON line; on every
  photo of --input when given, else on the eval split of config.data."""
  from colorgan.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  from colorgan.evaluation import records  # pylint: disable=g-import-not-at-top

  return records.to_json(
    evaluator.evaluate_checkpoint(
      config, workdir, FLAGS.step, inputs=FLAGS.input, vividness=FLAGS.vividness
    )
  )


def colorize_mode(config, workdir: str) -> int:
  """--mode=colorize: the exit status (1 when any photo failed)."""
  if not FLAGS.input:
    raise errors.UsageError(
      "--input is required for --mode=colorize: a photo, a folder or a glob (repeatable)"
    )
  if not FLAGS.output_dir:
    raise errors.UsageError(
      "--output_dir is required for --mode=colorize, e.g. --output_dir=colorized"
    )
  from colorgan.inference import colorize  # pylint: disable=g-import-not-at-top
  from colorgan.inference import photo  # pylint: disable=g-import-not-at-top
  from colorgan.inference import user_hints  # pylint: disable=g-import-not-at-top
  from colorgan.inference import video  # pylint: disable=g-import-not-at-top
  from colorgan.models import vividness  # pylint: disable=g-import-not-at-top

  setting = vividness.resolve(workdir, FLAGS.vividness)

  work, videos = video.split_plan(photo.plan(FLAGS.input, FLAGS.output_dir, FLAGS.output_format))
  hint_files = user_hints.plan_hint_files(FLAGS.hints, work) if work.jobs else {}
  colorizer = colorize.Colorizer.from_checkpoint(
    workdir, FLAGS.step, setting, size=FLAGS.colorize_size, batch_size=config.eval_batch_size
  )
  if hint_files and not colorizer.takes_hints:
    raise errors.UsageError(
      f"--hints={FLAGS.hints}: the generator of {FLAGS.workdir} (step {colorizer.step}) was "
      "trained without hints; train one with --config.hints.enabled=True (configs/hints.py), or "
      "drop --hints"
    )
  failures = colorizer.run(work, hint_files) if work.jobs else 0
  if videos:
    try:
      failures += video.run(
        colorizer,
        videos,
        temporal=FLAGS.temporal,
        hints=None if work.jobs else FLAGS.hints,
        resume=FLAGS.resume,
        lossless=FLAGS.video_lossless,
      )
    except KeyboardInterrupt:  # the video said where its frames are kept and how to resume
      return 130
  return 1 if failures else 0


@contextlib.contextmanager
def claim_workdir(workdir: str):
  """Process 0 holds the workdir for the run (colorgan.training.workdir.claim); every process
  learns whether it could, so that a refused multi-process run stops everywhere in one line
  instead of hanging."""
  import jax  # pylint: disable=g-import-not-at-top
  from colorgan.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  with contextlib.ExitStack() as stack:
    error = None
    if jax.process_index() == 0:
      try:
        stack.enter_context(workdir_lib.claim(workdir))
      except errors.WorkdirError as e:
        error = str(e)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      refused = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
      if refused and error is None:
        error = f"--workdir={workdir} could not be claimed by process 0: see its log"
    if error:
      raise errors.WorkdirError(error)
    yield


def export_mode(workdir: str) -> None:
  """--mode=export: the colorize function in --format at --output, its JSON beside it."""
  if not FLAGS.format:
    raise errors.UsageError(
      "--format is required for --mode=export: savedmodel, tflite, onnx or stablehlo"
    )
  if not FLAGS.output:
    raise errors.UsageError(
      f"--output is required for --mode=export, e.g. --output=colorize.{FLAGS.format}"
    )
  from colorgan import checkpointing  # pylint: disable=g-import-not-at-top
  from colorgan import hints  # pylint: disable=g-import-not-at-top
  from colorgan.inference import export  # pylint: disable=g-import-not-at-top
  from colorgan.models import vividness  # pylint: disable=g-import-not-at-top

  setting = vividness.resolve(workdir, FLAGS.vividness)
  fixed = export.parse_export_size(FLAGS.export_size)
  export.check_output(FLAGS.format, FLAGS.output)  # before the restore and the export's work
  inference = checkpointing.restore_for_inference(workdir, FLAGS.step)
  export.export(
    inference.config,
    vividness.variables_at(workdir, inference.g_variables, setting),
    step=inference.step,
    fmt=FLAGS.format,
    output=FLAGS.output,
    size=FLAGS.colorize_size,
    fixed=fixed,
    vividness=setting,
  )
  shape = "any height and width" if fixed is None else f"{fixed[0]}x{fixed[1]} pixels"
  print(
    f"exported the colorize function of step {inference.step} ({shape}) as {FLAGS.format} to "
    f"{FLAGS.output}; contract in {FLAGS.output}.json"
  )
  if hints.enabled(inference.config):
    print(
      "note: this run takes color hints; the export covers automatic colorization only (no "
      "hints): use --mode=colorize --hints or colorgan.serve for hints"
    )


def train_mode(config, workdir: str) -> None:
  """--mode=train: trains (or resumes) in workdir; a preemption (saved, resumable) exits 0."""
  from colorgan import parallel  # pylint: disable=g-import-not-at-top

  parallel.check_batch_size(config.batch_size, parallel.create_mesh(config))
  from colorgan.training import loop  # pylint: disable=g-import-not-at-top  (TF and JAX: ~10 s)
  from colorgan.training import preemption  # pylint: disable=g-import-not-at-top

  logging.info("colorgan %s: workdir %s", FLAGS.mode, workdir)
  try:
    with claim_workdir(workdir):
      loop.train_and_evaluate(config, workdir)
  except preemption.Preempted as e:  # SIGTERM / SIGINT: saved, resumable: a clean exit
    print(f"colorgan: {e}", flush=True)
    sys.exit(0)
  logging.info(
    "Done: checkpoints in %s/checkpoints, TensorBoard events in %s, samples in %s/samples",
    workdir,
    workdir,
    workdir,
  )


def initialize_distributed() -> None:
  """jax.distributed.initialize() when asked (flags or launcher environment); before any JAX work."""
  from colorgan import parallel  # pylint: disable=g-import-not-at-top

  explicit = {
    "coordinator_address": FLAGS.coordinator_address,
    "num_processes": FLAGS.num_processes,
    "process_id": FLAGS.process_id,
  }
  given = [f"--{k}" for k, v in explicit.items() if v is not None]
  if FLAGS.distributed == "off":
    if given:
      raise errors.UsageError(f"{given[0]} needs --distributed=auto or on, not off")
    return
  launcher = ", ".join(given) if given else parallel.multiprocess_launcher()
  if FLAGS.distributed == "auto" and not launcher:
    return
  import jax  # pylint: disable=g-import-not-at-top

  try:
    jax.distributed.initialize(**explicit)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UsageError(
      f"jax.distributed.initialize() failed (from {launcher or 'the environment'}): "
      f"{cli.one_line(e)}; check --coordinator_address, --num_processes and --process_id"
    ) from None
  logging.info("Joined a multi-process run (%s)", launcher or "--distributed=on")


def _validated_config(argv: list[str]):
  """The --config (validated), or UsageError when there is none."""
  if len(argv) > 1:
    raise errors.UsageError(
      f"unexpected argument(s) {' '.join(argv[1:])}: config values are set as --config.KEY=VALUE"
    )
  config = load_config(sys.argv)
  if config is None:
    raise errors.UsageError("--config is required, e.g. --config=configs/quickstart.py")
  configuration.validate(config)
  return config


def _run(argv: list[str]) -> None:
  """--mode's work; every mistake is raised as an errors.ColorganError."""
  config = _validated_config(argv)
  if FLAGS.vividness is not None:  # before any restore: a wrong knob is the first thing said
    from colorgan.models import vividness  # pylint: disable=g-import-not-at-top

    vividness.check(FLAGS.vividness, mode=FLAGS.mode)
  if FLAGS.mode == "summary":
    print(json.dumps(summary(config)))
    return
  if not FLAGS.workdir:
    raise errors.UsageError(
      f"--workdir is required for --mode={FLAGS.mode}, e.g. --workdir=workdirs/run1"
    )
  workdir = os.path.abspath(FLAGS.workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.UsageError(f"--workdir={FLAGS.workdir} exists and is not a directory")

  initialize_distributed()
  import jax  # pylint: disable=g-import-not-at-top
  from colorgan import models  # pylint: disable=g-import-not-at-top

  logging.info(
    "JAX process %d of %d: %d local of %d %s device(s)",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.default_backend(),
  )
  logging.info(
    "4x4 convolutions: %s (config.model.fast_layers=%r)",
    "matrix products" if models.use_fast_layers(config) else "flax's nn.Conv",
    config.model.fast_layers,
  )
  if FLAGS.mode == "evaluate":
    print(evaluate_mode(config, workdir))
  elif FLAGS.mode == "colorize":
    sys.exit(colorize_mode(config, workdir))
  elif FLAGS.mode == "export":
    export_mode(workdir)
  else:
    train_mode(config, workdir)


@cli.exit_on_error
def main(argv: list[str]) -> None:
  """Runs --mode; the one place where its errors become one line and an exit status (cli)."""
  cli.keep_only_colorgan_info()
  try:
    _run(argv)
  except FileNotFoundError as e:  # no checkpoint (at that step) in --workdir
    if FLAGS.mode not in RESTORE_MODES:
      raise
    raise errors.UsageError(f"--workdir={FLAGS.workdir}: {cli.one_line(e)}") from None


def run() -> None:
  cli.drop_closed_event_loop_reports()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
