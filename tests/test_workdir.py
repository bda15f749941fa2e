"""One run per workdir (a lock that a dead run does not keep), unwritable workdirs, quiet logs."""

import errno
import json
import logging as logging_std
import os
import socket
import subprocess
import sys
import time

import pytest

from colorgan import cli
from colorgan import errors
from colorgan import fileio
from colorgan import main
from colorgan.training import heartbeat
from colorgan.training import workdir as workdir_lib
from tests.conftest import REPO

_HOLD = """
import sys, time
from colorgan.training import workdir
with workdir.claim(sys.argv[1]):
  print("holding", flush=True)
  time.sleep(600)
"""


def _holder(path):
  proc = subprocess.Popen(
    [sys.executable, "-c", _HOLD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True
  )
  assert proc.stdout.readline().strip() == "holding"
  return proc


def test_a_second_run_on_a_live_runs_workdir_is_refused_naming_the_holder(tmp_path):
  workdir = tmp_path / "run"
  holder = _holder(workdir)
  try:
    record = json.loads((workdir / workdir_lib.LOCK_NAME).read_text())
    assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
    result = subprocess.run(
      [
        sys.executable,
        "-m",
        "colorgan.main",
        "--config=configs/default.py:smoke",
        f"--workdir={workdir}",
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("colorgan: error:")]
    assert len(lines) == 1, result.stderr
    assert (
      f"--workdir={workdir} is in use by another colorgan run (host {record['host']}, pid "
      f"{holder.pid}, started {record['started']})"
    ) in lines[0]
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(workdir)) == [workdir_lib.LOCK_NAME]  # the refused run wrote nothing
    with pytest.raises(errors.WorkdirError, match=f"pid {holder.pid}"):
      with workdir_lib.claim(str(workdir)):
        pass
  finally:
    holder.kill()  # kill -9: no cleanup of any kind
    holder.wait()
  # The kernel dropped the dead holder's lock: its stale file blocks nobody.
  with workdir_lib.claim(str(workdir)):
    record = json.loads((workdir / workdir_lib.LOCK_NAME).read_text())
    assert record["pid"] == os.getpid()
  assert (workdir / workdir_lib.LOCK_NAME).read_text() == ""  # released: names no one


def test_a_run_that_fails_at_start_leaves_no_empty_workdir(tmp_path):
  workdir = tmp_path / "new"
  with pytest.raises(RuntimeError):
    with workdir_lib.claim(str(workdir)):
      raise RuntimeError("a data error")
  assert not workdir.exists()
  os.makedirs(workdir)  # a workdir that was there before stays, even if empty
  with pytest.raises(RuntimeError):
    with workdir_lib.claim(str(workdir)):
      raise RuntimeError("a data error")
  assert workdir.is_dir()


def test_an_empty_data_folder_is_one_line_and_leaves_no_workdir(tmp_path):
  os.makedirs(tmp_path / "photos")
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "colorgan.main",
      "--config=configs/folder.py",
      f"--config.data.path={tmp_path / 'photos'}",
      f"--workdir={tmp_path / 'run'}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.startswith("colorgan: error:")]
  assert len(lines) == 1 and str(tmp_path / "photos") in lines[0], result.stderr
  assert not (tmp_path / "run").exists()


def _read_only(*args, **kwargs):
  raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def test_a_workdir_that_cannot_be_written_is_one_line_before_any_work(
  tmp_path, monkeypatch, capsys
):
  # Cannot be created (a read-only mount; root ignores permission bits, so the failure is made).
  monkeypatch.setattr(fileio.os, "makedirs", _read_only)
  with pytest.raises(errors.WorkdirError) as e:
    fileio.ensure_writable(str(tmp_path / "new"))
  assert str(e.value) == (
    f"--workdir={tmp_path / 'new'} cannot be created: Read-only file system "
    "(a read-only file system or a missing permission: choose another "
    "--workdir)"
  )
  monkeypatch.undo()
  # Exists, but nothing can be written in it.
  monkeypatch.setattr(fileio, "open", _read_only, raising=False)
  with pytest.raises(errors.WorkdirError, match="cannot be written: Read-only file system"):
    fileio.ensure_writable(str(tmp_path))
  # The command line: one line, exit 2, nothing trained.
  argv = ["colorgan", f"--config={REPO}/configs/default.py:smoke", f"--workdir={tmp_path}"]
  monkeypatch.setattr(sys, "argv", argv)
  main.FLAGS(argv)
  try:
    with pytest.raises(SystemExit) as exit_:
      main.main(argv[:1])
  finally:
    main.FLAGS.unparse_flags()
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert err.count("colorgan: error:") == 1 and "cannot be written" in err, err
  assert os.listdir(tmp_path) == []


def test_only_colorgans_own_info_lines_pass_the_log_filter(tmp_path):
  keep = cli.OnlyColorganInfo()
  package = os.path.dirname(cli.__file__)

  def record(path, level=logging_std.INFO):
    return logging_std.LogRecord("absl", level, path, 1, "message", (), None)

  assert keep.filter(record(os.path.join(package, "train.py")))
  # A clone or a virtualenv under a folder named colorgan: a library's INFO is still dropped.
  venv_file = "/home/me/colorgan/.venv/lib/python3.11/site-packages/orbax/checkpoint/x.py"
  assert not keep.filter(record(venv_file))
  assert not keep.filter(record("/opt/colorgan/colorgan_tools/x.py"))
  assert keep.filter(record(venv_file, logging_std.WARNING))


def test_heartbeat_names_the_activity_after_a_silence(caplog):
  caplog.set_level(logging_std.INFO, logger="absl")
  with heartbeat.Heartbeat(interval=1.0, total_steps=20) as beat:
    beat.step = 7
    with beat.activity("evaluating on 8 photos"):
      time.sleep(2.5)
    quiet_until = len(caplog.records)
    for _ in range(10):  # a run that logs often gets no heartbeat
      beat.logged()
      time.sleep(0.05)
    assert len(caplog.records) == quiet_until
  beats = [r.getMessage() for r in caplog.records if r.getMessage().startswith("... ")]
  assert beats, caplog.text
  assert beats[0].startswith("... at step 7/20: evaluating on 8 photos (")
