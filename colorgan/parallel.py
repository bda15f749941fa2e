"""Data parallelism over a `jax.sharding.Mesh`: the state replicated, batches split on their first axis.

Under `jax.jit` with these shardings XLA inserts the gradient all-reduces itself, and BatchNorm's
batch statistics are computed over the global batch (sync-BN), so any device count gives the result of
one device.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def create_mesh() -> jax.sharding.Mesh:
  """A one-axis mesh over every device of every process.

  Auto axes: under Explicit ones (make_mesh's default), batch reshapes and indexing inside jit fail.
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh, *, key: str = "batch_size") -> None:
  """The global batch must split evenly over the devices: a one-line error otherwise."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(
        f"config.{key}={global_batch} does not divide evenly over {n} devices: "
        f"use a multiple of {n}")


def process_batch_rows(mesh: jax.sharding.Mesh, global_batch: int) -> tuple[int, int]:
  """The rows [lo, hi) of every global batch that this process's devices hold."""
  index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
  starts = [idx[0].start or 0 for idx in index_map.values()]
  stops = [global_batch if idx[0].stop is None else idx[0].stop for idx in index_map.values()]
  lo, hi = min(starts), max(stops)
  if hi - lo != sum(b - a for a, b in zip(starts, stops)):
    raise ValueError("this process's devices do not hold a contiguous block of the batch")
  return lo, hi


def global_batch(mesh: jax.sharding.Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """This process's rows -> one global jax.Array per key, sharded over the data axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
