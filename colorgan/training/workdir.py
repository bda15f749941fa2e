"""The workdir of a training run: writable, and used by one run at a time.

`claim(workdir)` is held for a training run's whole life. It creates the workdir (one line if it
cannot be created or written, a read-only mount or a missing permission: fileio.ensure_writable),
then takes an exclusive lock on `WORKDIR/.colorgan.lock`, which names its holder (host, pid, start
time, command line). A second run on the same workdir is refused in one line naming the holder,
before it writes anything.

The lock is an flock(2) lock: the kernel drops it when its process ends in any way (an exception,
SIGTERM, kill -9, a crash), so a lock file left behind by a dead run is stale and the next run takes
it over without anyone deleting it. Multi-process runs of one job share the workdir by design: only
process 0 takes the lock (main.py decides). A workdir that the claim itself created and that is
still empty when the run fails at start (a data error, say) is removed again.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from typing import Iterator

from absl import logging

from colorgan import errors
from colorgan import fileio

LOCK_NAME = ".colorgan.lock"


def _holder() -> dict:
  return {
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "argv": sys.argv,
  }


def _describe(path: str) -> str:
  """The holder recorded in the lock file, in words (what a refused run prints)."""
  try:
    with open(path) as f:
      holder = json.load(f)
    return f"host {holder['host']}, pid {holder['pid']}, started {holder['started']}"
  except (OSError, ValueError, KeyError, TypeError):
    return "a process that has not written its name yet"


@contextlib.contextmanager
def claim(workdir: str) -> Iterator[None]:
  """Holds `workdir` for one training run (see the module docstring).

  Raises:
    errors.WorkdirError: the workdir cannot be created or written, or another live run holds it.
  """
  created = fileio.ensure_writable(workdir)
  path = os.path.join(workdir, LOCK_NAME)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise errors.WorkdirError(
          f"--workdir={workdir} is in use by another colorgan run "
          f"({_describe(path)}): wait for it to end, stop it, or choose "
          "another --workdir"
        ) from None
      # A file system without locks (some FUSE mounts): run, but say that nothing guards it.
      logging.warning(
        "%s cannot be locked (%s): nothing stops a second run on this workdir",
        path,
        e.strerror or e,
      )
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(_holder()) + "\n").encode(), 0)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # released: a reader never names a run that has ended
  finally:
    os.close(fd)  # drops the flock
    if created and set(os.listdir(workdir)) <= {LOCK_NAME}:
      # Nothing was written: a run that failed at start leaves no empty workdir behind.
      with contextlib.suppress(OSError):
        os.remove(path)
        os.rmdir(workdir)
