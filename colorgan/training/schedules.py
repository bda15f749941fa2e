"""Learning-rate schedules: functions of the train step, one per network.

A schedule maps the train step s (0 for the first update, counted over the whole run, D warm-up steps
included) to the learning rate of the update made at that step. The step, not an optimizer's own
update count, is the clock: D may update several times per step (config.optim.d_steps) and G not at
all during D warm-up, and both networks still follow the same timeline.

  constant      base
  linear_decay  base until the last decay_steps steps, then linearly to 0 at total_steps (pix2pix's
                lr_policy='linear': 100 epochs at base, 100 decaying; decay_steps=0 means half the run)
  cosine        base * (1 + cos(pi * t)) / 2, t going from 0 to 1 between warmup_steps and total_steps

warmup_steps > 0 multiplies any of them by min(1, (s + 1) / warmup_steps): the first update uses
base / warmup_steps, update warmup_steps - 1 the full rate.
"""

from typing import Callable

import jax.numpy as jnp

Schedule = Callable[[int], float]  # step -> learning rate (works on Python ints and traced arrays)

SCHEDULES = ("constant", "linear_decay", "cosine")


def create_schedule(
  name: str, base: float, *, total_steps: int, warmup_steps: int = 0, decay_steps: int = 0
) -> Schedule:
  """The learning rate at each train step.

  Args:
    name: one of SCHEDULES.
    base: the peak learning rate.
    total_steps: the run's length (config.total_steps).
    warmup_steps: linear warm-up from base / warmup_steps to base; 0: none.
    decay_steps: linear_decay only: the length of the final decay; 0: total_steps // 2.

  Returns:
    schedule(step) -> learning rate, a float32 jax scalar.
  """
  if name not in SCHEDULES:
    raise ValueError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
  decay_steps = decay_steps or max(total_steps // 2, 1)

  def schedule(step):
    s = jnp.asarray(step, jnp.float32)
    if name == "constant":
      lr = jnp.full((), base, jnp.float32)
    elif name == "linear_decay":
      lr = base * jnp.clip((total_steps - s) / decay_steps, 0.0, 1.0)
    else:  # cosine
      t = jnp.clip((s - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
      lr = base * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
    if warmup_steps > 0:
      lr = lr * jnp.minimum(1.0, (s + 1.0) / warmup_steps)
    return lr.astype(jnp.float32)

  return schedule
