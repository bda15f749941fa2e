"""Non-finite losses and gradients: detected inside the step, acted on without extra host syncs.

The jitted step computes one `finite` flag (every loss term and both gradients' global norms finite).
With config.nan_policy="skip" it keeps the previous parameters, BatchNorm statistics and optimizer
states when the flag is down: a select inside the step, no host sync. The first non-finite step of a
log interval and its loss terms ride along with the metrics (FirstNonFinite). The loop reads them only
where it waits for the device anyway (log, sample and save steps): "stop" then stops before anything
is saved, "skip" logs the skipped updates and goes on.
"""

import math
from typing import Any

from clu import metrics as clu_metrics
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

_NONE = np.iinfo(np.int32).max  # FirstNonFinite.step while every step was finite


def grad_norm(grads: Any) -> jax.Array:
  """The global norm of a gradient tree, for the finite flag: it is finite iff every gradient is (up
  to |g| > ~1e19, whose square overflows: Adam's second moment would be inf as well, so that counts
  as divergence too)."""
  return optax.tree.norm(grads)


def all_finite(scalars: dict[str, jax.Array]) -> jax.Array:
  """The step's finite flag: bool [], every scalar (loss terms, gradient norms) finite."""
  return jnp.all(jnp.stack([jnp.isfinite(v) for v in scalars.values()]))


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
  """`new` where the step was finite, else `old`, leaf by leaf (same tree structure)."""
  return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


@flax.struct.dataclass
class FirstNonFinite(clu_metrics.Metric):
  """The earliest non-finite step of the merged steps and every scalar the step reported."""

  step: jax.Array  # int32 []; _NONE while all were finite
  values: dict[str, jax.Array]

  @classmethod
  def from_model_output(cls, *, finite: jax.Array, step: jax.Array, **outputs) -> "FirstNonFinite":
    outputs.pop("nonfinite", None)  # the flag itself, as a metric
    values = {
      k: jnp.asarray(v, jnp.float32)
      for k, v in outputs.items()
      if jnp.ndim(v) == 0 and jnp.issubdtype(jnp.result_type(v), jnp.floating)
    }
    return cls(step=jnp.where(finite, _NONE, step).astype(jnp.int32), values=values)

  def merge(self, other: "FirstNonFinite") -> "FirstNonFinite":
    take_other = other.step < self.step
    return jax.tree.map(lambda a, b: jnp.where(take_other, b, a), self, other)

  def compute(self) -> jax.Array:
    return jnp.where(self.step == _NONE, -1, self.step)


def exclude_from_averages(
  metrics: clu_metrics.Collection, finite: jax.Array, keep: tuple[str, ...]
) -> clu_metrics.Collection:
  """Drops a non-finite step from the Average metrics (but `keep`): a skipped step's NaN would
  otherwise turn its whole log interval's means into NaN."""

  def mask(name, metric):
    if name in keep or not isinstance(metric, clu_metrics.Average):
      return metric
    return metric.replace(
      total=jnp.where(finite, metric.total, 0), count=jnp.where(finite, metric.count, 0)
    )

  return metrics.replace(**{name: mask(name, m) for name, m in vars(metrics).items()})


def first_nonfinite(metrics: clu_metrics.Collection) -> tuple[int, dict[str, float]] | None:
  """(step, scalars of that step) of the first non-finite step in `metrics`, or None.

  Reads the device: call it where the loop waits for the device anyway.
  """
  record = metrics.first_nonfinite
  step = int(record.step)
  if step == _NONE:
    return None
  return step, {k: float(v) for k, v in jax.device_get(record.values).items()}


def describe(step: int, values: dict[str, float]) -> str:
  """One line: the step, its non-finite terms first, then the finite ones."""
  bad = [f"{k}={v}" for k, v in sorted(values.items()) if not math.isfinite(v)]
  good = [f"{k}={v:.4g}" for k, v in sorted(values.items()) if math.isfinite(v)]
  return f"non-finite loss or gradient at step {step}: {' '.join(bad)} (finite: {' '.join(good)})"
