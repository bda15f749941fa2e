"""The command line: summary JSON and one-line usage errors (exit 2), run as a user would."""

import json
import os
import subprocess
import sys

import pytest

from colorgan import cli
from colorgan import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=120):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "colorgan.main", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_summary_of_the_default_config():
  result = _run("--config=configs/default.py", "--mode=summary")
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["generator_params"] == 54_409_858
  assert summary["discriminator_params"] == 2_765_633
  assert summary["discriminator_logits_shape"] == [30, 30]
  assert "Total: 54,409,858" in result.stdout
  # fast_layers="auto" resolved on this backend: the matrix products on CPU.
  assert summary["backend"] == "cpu" and summary["fast_layers"] is True


def test_summary_names_the_layers_a_command_line_value_gives():
  result = _run(
    "--config=configs/default.py:smoke", "--config.model.fast_layers=False", "--mode=summary"
  )
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["fast_layers"] is False and summary["backend"] == "cpu"


@pytest.mark.parametrize(
  "args, expected",
  [
    (
      ["--config=configs/default.py", "--config.no_such_key=1", "--mode=summary"],
      "--config.no_such_key: 'no_such_key' is not a key of configs/default.py",
    ),
    (
      ["--config=configs/default.py", "--config.model.nope=3", "--mode=summary"],
      "--config.model.nope: 'nope' is not a key",
    ),
    # Misspellings, where ml_collections adds its own "Did you mean" to the error it raises.
    (
      ["--config=configs/default.py", "--config.batch_sise=8", "--mode=summary"],
      "--config.batch_sise: 'batch_sise' is not a key of configs/default.py (no "
      "config.batch_sise); the closest keys: batch_size",
    ),
    (
      ["--config=configs/quickstart.py", "--config.lose.gan=lsgan", "--mode=summary"],
      "--config.lose.gan: 'lose' is not a key of configs/quickstart.py (no config.lose.gan); the "
      "closest keys: loss.gan",
    ),
    (
      ["--config=configs/default.py", "--config.batch_size=many", "--mode=summary"],
      "--config.batch_size=many",
    ),
    (
      ["--config=configs/default.py", "--config.loss.gan=wgan", "--mode=summary"],
      "config.loss.gan='wgan' is not known: choose one of vanilla",
    ),
    (
      ["--config=configs/default.py", "--config.image_size=100", "--mode=summary"],
      "config.image_size=100 must be a power of two",
    ),
    (
      ["--config=configs/default.py", "--config.optim.b1=1.5", "--mode=summary"],
      "config.optim.b1=1.5 must be in [0, 1)",
    ),
    (
      ["--config=configs/default.py", "--config.model.fast_layers=yes", "--mode=summary"],
      "config.model.fast_layers='yes' is not known: choose auto",
    ),
    (["--config=configs/default.py"], "--workdir is required"),
    (
      ["--config=configs/missing.py", "--mode=summary"],
      "--config=configs/missing.py: no such file",
    ),
    (
      ["--config=configs/default.py:bogus", "--mode=summary"],
      "configs/default.py takes no argument or 'smoke'",
    ),
    (["--mode=summary"], "--config is required"),
  ],
)
def test_user_mistakes_are_one_line_errors(args, expected):
  result = _run(*args)
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.startswith("colorgan: error:")]
  assert len(lines) == 1, result.stderr
  assert expected in lines[0]
  assert "Traceback" not in result.stderr


def test_workdir_that_is_a_file(tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  result = _run("--config=configs/default.py:smoke", f"--workdir={path}")
  assert result.returncode == 2
  assert "is not a directory" in result.stderr


@pytest.mark.parametrize(
  "error, status",
  [
    (errors.ConfigError("config.x=1 must be 2"), 2),
    (errors.UsageError("--input is required"), 2),
    (errors.RestoreError("checkpoints/7 is damaged"), 1),
  ],
)
def test_an_entry_point_ends_an_error_in_one_line_with_its_exit_status(
  error, status, capsys, monkeypatch
):
  monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # exit 1 quiets it: restored

  @cli.exit_on_error
  def command():
    raise error

  with pytest.raises(SystemExit) as exit_:
    command()
  assert exit_.value.code == status
  assert capsys.readouterr().err == f"colorgan: error: {error}\n"
