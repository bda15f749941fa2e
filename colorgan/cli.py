"""What colorgan's four commands (main, fid, serve, convert_weights) share; it defines no flags.

A mistake in a command, or a run that cannot go on, ends in one line on stderr,
`colorgan: error: ...`, and the exit status its error carries (errors.ColorganError.exit_status: 2
for the command or its inputs, 1 for a damaged checkpoint or a divergence). Library code raises the
errors; only the entry points import this module and turn them into that line (`exit_on_error`).
"""

from collections.abc import Callable, Collection
import difflib
import functools
import importlib.util
import logging as logging_std
import os
import re
import sys
from typing import NoReturn, TypeVar

from absl import flags
from absl import logging

from colorgan import configuration
from colorgan import errors

_Function = TypeVar("_Function", bound=Callable)

# TensorFlow only feeds data and converts exports here, and its C++ start-up lines are noise to a
# user: "oneDNN custom operations are on" comes twice (once per TF library) on CPUs where oneDNN is
# the default, whatever TF_CPP_MIN_LOG_LEVEL says; turning those ops off silences it (TensorFlow's
# own numerics are not the model's). Set on import: every entry point imports this module before
# anything imports TensorFlow. A user's own values win.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def fail(message: str, exit_status: int = 2) -> NoReturn:
  """Ends the command with `colorgan: error: <message>` on stderr and `exit_status`.

  A run that cannot go on (exit 1) is often a failed orbax restore: it leaves coroutines that Python
  reports as "Exception ignored in ..." with their tracebacks when they are collected at exit, and
  reads whose failures asyncio logs as "Task exception was never retrieved" (on a busy machine,
  after this line). The line already says what went wrong, so neither is printed.
  """
  print(f"colorgan: error: {message}", file=sys.stderr, flush=True)
  if exit_status == 1:
    sys.unraisablehook = lambda unraisable: None
    logging_std.getLogger("asyncio").disabled = True
  sys.exit(exit_status)


def exit_on_error(function: _Function) -> _Function:
  """Decorates an entry point's function: an errors.ColorganError ends the command in one line."""

  @functools.wraps(function)
  def wrapper(*args, **kwargs):
    try:
      return function(*args, **kwargs)
    except errors.ColorganError as e:
      fail(str(e), e.exit_status)

  return wrapper


def one_line(error: BaseException) -> str:
  """An exception's message on one line (absl's "Flags parsing error: " prefix dropped)."""
  text = " ".join(str(error).split())
  return text.removeprefix("Flags parsing error: ")


# ----------------------------------------------------------------------------- logs and reports
class OnlyColorganInfo(logging_std.Filter):
  """Orbax, JAX and clu log dozens of INFO lines per checkpoint: keep INFO for colorgan's own lines.

  They all log through absl's one logger, so the test is where the record was made: a file of the
  colorgan package itself (not any path with a folder named colorgan in it: a clone or a virtualenv
  under such a folder would let every library's lines through).
  """

  PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno >= logging_std.WARNING or os.path.abspath(record.pathname).startswith(
      self.PACKAGE_DIR
    )


def keep_only_colorgan_info() -> None:
  """Installs OnlyColorganInfo on absl's handler (the command's log on stderr)."""
  logging.get_absl_handler().addFilter(OnlyColorganInfo())


def drop_closed_event_loop_reports() -> None:
  """Drops "RuntimeError: Event loop is closed" reports; passes every other one on.

  When an orbax restore fails, its asyncio loop closes while tensorstore reads are still in flight;
  each read that completes later calls the loop from a tensorstore thread, and tensorstore reports
  the failure as unraisable, a bare traceback. Dozens of them buried the one line that says why the
  restore failed, and on a busy machine they come before it.
  """
  previous = sys.unraisablehook

  def hook(unraisable):
    if (
      isinstance(unraisable.exc_value, RuntimeError)
      and str(unraisable.exc_value) == "Event loop is closed"
    ):
      return
    previous(unraisable)

  sys.unraisablehook = hook


# ----------------------------------------------------------------------------- the run's config
# main's modes that restore a run use, without --config, the run's own config (WORKDIR/config.json)
# through this file: --config=SAVED_CONFIG:WORKDIR.
SAVED_CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "saved.py"
)


def flag_value(argv: list[str], name: str) -> str | None:
  """The last --name=value or --name value in argv (before absl parses it)."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.partition("=")[2]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def with_saved_config(
  argv: list[str], *, required: Collection[str], optional: Collection[str] = ()
) -> list[str]:
  """argv with --config=SAVED_CONFIG:WORKDIR inserted when it has no --config, so that the run's
  own config is used and --config.KEY overrides apply (sys.argv is rewritten to match).

  Args:
    argv: the command line, argv[0] included.
    required: the --mode values that restore --workdir's run: --workdir must name one.
    optional: the --mode values that use the run's config only when --workdir is given.

  Raises:
    errors.UsageError: a `required` mode without --workdir, or a --workdir with no config.json.
  """
  mode = flag_value(argv, "mode")
  if mode not in (*required, *optional) or flag_value(argv, "config") is not None:
    return argv
  workdir = flag_value(argv, "workdir")
  if not workdir and mode not in required:  # --config is required: main says so
    return argv
  if not workdir:
    raise errors.UsageError(
      f"--workdir is required for --mode={mode}: the run to restore, e.g. "
      "--workdir=workdirs/quickstart"
    )
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    raise errors.UsageError(
      f"--workdir={workdir} holds no config.json: point --workdir at a "
      "training run (or pass --config)"
    )
  argv = argv[:1] + [f"--config={SAVED_CONFIG}:{os.path.abspath(workdir)}"] + argv[1:]
  sys.argv[:] = argv  # error messages quote the config from sys.argv
  return argv


# ----------------------------------------------------------------------------- flag errors
def config_file_arg(argv: list[str]) -> str:
  """The FILE[:ARG] of --config in argv, "?" without one."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.partition("=")[2]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return "?"


def runs_config(config_arg: str) -> str | None:
  """How errors name configs/saved.py:WORKDIR, main's --config for a command that restores a run
  without one: "the run's config (WORKDIR/config.json)" (that file is internal); else None."""
  path, _, workdir = config_arg.partition(":")
  if path.endswith(os.path.join("configs", "saved.py")) and workdir:
    return f"the run's config ({os.path.join(workdir, 'config.json')})"
  return None


def _config_label(argv: list[str]) -> str:
  """How an error names the config of argv: --config=FILE[:ARG], or the run's config."""
  return runs_config(config_file_arg(argv)) or f"--config={config_file_arg(argv)}"


def _config_keys(config_arg: str) -> list[str]:
  """The dotted keys of the config named by --config=FILE[:ARG] (loaded as config_flags does), or
  [] when it cannot be loaded."""
  path, _, arg = config_arg.partition(":")
  try:
    spec = importlib.util.spec_from_file_location("colorgan_config_for_error", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    return sorted(configuration.flatten(config))
  except Exception:  # pylint: disable=broad-except  (only a better error message is at stake)
    return []


def unknown_key_message(argv: list[str], error: Exception) -> str:
  """One line for an override of a key the config lacks: the override, the unknown part of it, and
  the closest keys of the config (ml_collections' own 'Did you mean' is about one level only)."""
  text = str(error).encode().decode("unicode_escape")  # KeyError quotes its message
  names = re.findall(r"'([A-Za-z0-9_]+)'", text)
  name = names[0] if names else None
  overrides = [a.split("=")[0].removeprefix("--") for a in argv if a.startswith("--config.")]
  override = next((o for o in overrides if name in o.split(".")), None) if name else None
  config_arg = config_file_arg(argv)
  config_file = runs_config(config_arg) or config_arg.split(":")[0]
  if override is None:
    return f"--config.{name or '?'} is not a key of {config_file}; the keys are listed in that file"
  key = override.removeprefix("config.")
  closest = difflib.get_close_matches(key, _config_keys(config_arg), n=3, cutoff=0.5)
  hint = (
    f"; the closest keys: {', '.join(closest)}" if closest else "; the keys are listed in that file"
  )
  return f"--{override}: {name!r} is not a key of {config_file} (no config.{key}){hint}"


def config_flags_message(argv: list[str], error: Exception) -> str:
  """One line for an error that parsing argv with a --config flag (config_flags) raised."""
  if isinstance(error, flags.Error):
    if "Traceback" in str(error):  # get_config() raised: its own message is the last line
      return f"{_config_label(argv)}: {str(error).strip().splitlines()[-1]}"
    return one_line(error) + " (see --helpfull; config keys are listed in the config file)"
  if isinstance(error, (AttributeError, KeyError)):
    # ml_collections raises these for an override of a key the config does not have.
    return unknown_key_message(argv, error)
  return f"{_config_label(argv)}: {type(error).__name__}: {one_line(error)}"


def config_load_message(argv: list[str], error: Exception) -> str:
  """One line for a config file that failed to load (config_flags defers that to its first use)."""
  reason = one_line(error).removeprefix(
    "Configuration is not available because of an earlier failure to load: "
  )
  if "No such file" in reason:
    reason = "no such file"
  return f"{_config_label(argv)}: {reason}"
