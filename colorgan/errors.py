"""The errors a user can cause or meet, each carrying the exit status its command ends with.

Raised anywhere, caught once at the edge (`colorgan.cli`): the message is one line that names the
file, flag or config key and what to do, and the process exits with `exit_status`. 2: the command or
its inputs are wrong (fix them and rerun); 1: the command was right but the run cannot go on (a
damaged checkpoint, a divergence). A leaf module: it imports nothing of colorgan's.
"""


class ColorganError(Exception):
  """Base class: a one-line message for the user and the exit status of the command."""

  exit_status = 2


class UsageError(ColorganError):
  """A flag or argument of the command is missing or wrong (--workdir, --input, PATH_A, ...)."""


class ConfigError(ColorganError, ValueError):
  """A config value the run cannot use; the message names the key and what to do."""


class DataError(ConfigError):
  """The data named by config.data.* (or --input) cannot be used."""


class HintError(ColorganError, ValueError):
  """A hint file (--hints) or hint text cannot be used."""


class PlanError(ColorganError, ValueError):
  """The --input / --output_dir of colorize cannot be planned."""


class ExportError(ColorganError):
  """The export cannot be written as asked (--format, --export_size, --output)."""


class WeightsError(ColorganError, ValueError):
  """A weights file (.npz or .pth) is missing, unreadable or of the wrong network."""


class StatsError(ColorganError, ValueError):
  """A statistics file (FID reference .npz) is missing or malformed."""


class WorkdirError(ColorganError, RuntimeError):
  """The workdir cannot be used by this run (not writable, or held by another live run)."""


class RestoreError(ColorganError, RuntimeError):
  """A checkpoint cannot be restored (damaged, or not of this config)."""

  exit_status = 1


class Diverged(ColorganError, RuntimeError):
  """Training produced a non-finite loss or gradient under nan_policy="stop"."""

  exit_status = 1


class VideoError(ColorganError, ValueError):
  """A video (--input, or video_metrics' arguments) cannot be read or colorized as asked."""
