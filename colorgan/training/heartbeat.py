"""A log line at least every `interval` seconds of a long run, saying what it is doing.

Compiling the first step, an evaluation, waiting for a checkpoint to be written or for the input
pipeline to stop can each take a minute on a small machine; a log interval longer than the run leaves
nothing between its start and its end. The heartbeat is a daemon thread that, when nothing was logged
for `interval` seconds, logs the current activity and how long it has lasted. The training loop sets
the activity (a cheap assignment); any line that the log handler writes restarts the count.
"""

import contextlib
import threading
import time
from typing import Iterator

from absl import logging


class Heartbeat:
  """Use as a context; `activity(...)` names what the run does, `step` is the host's step count."""

  def __init__(self, interval: float = 30.0, *, total_steps: int | None = None):
    self.interval = interval
    self.total_steps = total_steps
    self.step: int | None = None  # while training: the step being computed
    self._activity = "starting"
    self._activity_start = self._last_output = time.monotonic()
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._run, name="colorgan-heartbeat", daemon=True)

  def __enter__(self) -> "Heartbeat":
    # Every line the log handler lets through (main.py keeps colorgan's own) restarts the count.
    logging.get_absl_handler().addFilter(self._saw_record)
    self._thread.start()
    return self

  def __exit__(self, *exc_info) -> None:
    self._done.set()
    self._thread.join()
    logging.get_absl_handler().removeFilter(self._saw_record)

  def _saw_record(self, record) -> bool:
    del record
    self.logged()
    return True

  def logged(self) -> None:
    """A line was just logged: the next heartbeat is due `interval` from now."""
    self._last_output = time.monotonic()

  def set_activity(self, what: str) -> None:
    self._activity, self._activity_start = what, time.monotonic()

  @contextlib.contextmanager
  def activity(self, what: str) -> Iterator[None]:
    """`what` for the duration of the block, then back to the previous activity."""
    previous, since = self._activity, self._activity_start
    self.set_activity(what)
    try:
      yield
    finally:
      self._activity, self._activity_start = previous, since

  def message(self) -> str:
    now = time.monotonic()
    where = ""
    if self.step is not None:
      where = f"at step {self.step}" + (f"/{self.total_steps}" if self.total_steps else "") + ": "
    return f"{where}{self._activity} ({now - self._activity_start:.0f} s so far)"

  def _run(self) -> None:
    while not self._done.wait(min(1.0, self.interval / 4)):
      if time.monotonic() - self._last_output >= self.interval:
        logging.info("... %s", self.message())
        self.logged()
