"""Stopping on SIGTERM / SIGINT: a flag the training loop reads once per step, then a clean save.

JAX's own preemption service (behind orbax's PreemptionCheckpointingPolicy) only works in a
multi-process run started with jax.distributed, where it also agrees on one step for all processes.
A single process installs its own handlers: the signal sets a Python flag, the loop sees it after the
step it is on, saves that step, waits for the save and exits 0. Reading the flag costs nothing: no
device sync.
"""

import signal
import threading

from absl import logging
import jax
import orbax.checkpoint as ocp

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """A context that turns SIGTERM / SIGINT into `requested(step) == True` at the next step.

  The first signal sets the flag and restores the previous handler, so a second one acts at once
  (Ctrl-C twice: KeyboardInterrupt; the last committed checkpoint stays either way).

  In a multi-process run no handler is installed: processes may see a signal at different steps,
  and saving is collective. There SIGTERM goes to JAX's preemption service, whose agreed sync step
  `requested` also reports; SIGINT keeps its default.
  """

  def __init__(self):
    self.signal_name: str | None = None
    self._noticed = False
    self._previous: dict[int, object] = {}

  def __enter__(self) -> "StopRequest":
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum: int, frame) -> None:
    # Only flags: writing to a stream here could interrupt a write in progress to the same stream
    # (a reentrant-call RuntimeError); the loop logs the notice.
    del frame
    self.signal_name = signal.Signals(signum).name
    signal.signal(signum, self._previous.pop(signum, signal.SIG_DFL))

  def requested(self, step: int) -> bool:
    """True once a signal arrived (or, multi-process, at JAX's preemption sync step)."""
    if self.signal_name is not None:
      if not self._noticed:
        self._noticed = True
        logging.warning(
          "%s received: saving a checkpoint of step %d, then stopping (send it again "
          "to quit at once)",
          self.signal_name,
          step,
        )
      return True
    if jax.process_count() > 1 and ocp.multihost.reached_preemption(step):
      self.signal_name = "preemption notice"
      logging.warning("JAX preemption sync point reached at step %d", step)
      return True
    return False


class Preempted(Exception):
  """Training stopped early on request after saving; the message says where (exit status 0)."""
