"""Data parallelism over a `jax.sharding.Mesh`: the state replicated, batches split on their first axis.

The mesh has two axes, ("data", "model"), shaped by config.mesh.*. Batches are split over "data" and
the state is replicated; "model" is 1 by default and holds room for sharding parameters later (today a
model axis > 1 only repeats the same computation on its devices).

Under `jax.jit` with these shardings XLA inserts the gradient all-reduces itself, and BatchNorm's
batch statistics are computed over the global batch (sync-BN), so any device count gives the result of
one device. The same holds across processes (hosts) joined by `jax.distributed.initialize`: each
process feeds its own rows of every global batch (`process_batch_rows`, `global_batch`).
"""

from collections.abc import Mapping, Sequence
import os

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from colorgan import errors

DATA_AXIS = "data"
MODEL_AXIS = "model"


def mesh_shape(config: ml_collections.ConfigDict | None, num_devices: int) -> tuple[int, int]:
  """(data, model) axis sizes for `num_devices` from config.mesh (-1: whatever the other leaves).

  Args:
    config: a config that configuration.validate accepted (each axis a positive size or -1, not
      both -1); None: all devices on the data axis.
    num_devices: the devices the mesh spans.

  Raises:
    errors.ConfigError: the sizes do not multiply to num_devices.
  """
  data, model = (-1, 1) if config is None else (config.mesh.data, config.mesh.model)
  if data == -1 or model == -1:
    known = model if data == -1 else data
    if num_devices % known:
      raise errors.ConfigError(
        f"config.mesh.{'model' if data == -1 else 'data'}={known} does not "
        f"divide the {num_devices} devices: use a divisor of {num_devices}"
      )
    data, model = (num_devices // known, known) if data == -1 else (known, num_devices // known)
  if data * model != num_devices:
    raise errors.ConfigError(
      f"config.mesh.data={data} x config.mesh.model={model} != "
      f"{num_devices} devices: set one of them to -1 to use all devices"
    )
  return data, model


def create_mesh(
  config: ml_collections.ConfigDict | None = None, *, devices: Sequence[jax.Device] | None = None
) -> jax.sharding.Mesh:
  """A ("data", "model") mesh over `devices` (default: every device of every process).

  Auto axes: under Explicit ones (make_mesh's default), batch reshapes and indexing inside jit fail.

  Args:
    config: reads config.mesh.data and config.mesh.model; None: all devices on the data axis.
    devices: a subset of devices (tests compare 1, 4 and 8 devices in one process).
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(config, len(devices))
  return jax.make_mesh(
    shape, (DATA_AXIS, MODEL_AXIS), devices=devices, axis_types=(jax.sharding.AxisType.Auto,) * 2
  )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading axis split over "data" (and copied along "model")."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(
  global_batch: int, mesh: jax.sharding.Mesh, *, key: str = "batch_size"
) -> None:
  """The global batch must split evenly over the data axis: a one-line ConfigError otherwise."""
  n = mesh.shape[DATA_AXIS]
  if global_batch % n:
    lower, upper = global_batch // n * n, -(-global_batch // n) * n
    hint = f"{lower} or {upper}" if lower else f"{upper}"
    raise errors.ConfigError(
      f"config.{key}={global_batch} does not divide evenly over the {n} devices of the mesh's "
      f"data axis: use a multiple of {n}, e.g. {hint}"
    )


def process_batch_rows(mesh: jax.sharding.Mesh, global_batch: int) -> tuple[int, int]:
  """The rows [lo, hi) of every global batch that this process's devices hold."""
  index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
  starts = [idx[0].start or 0 for idx in index_map.values()]
  stops = [global_batch if idx[0].stop is None else idx[0].stop for idx in index_map.values()]
  rows = sorted(set(zip(starts, stops)))  # devices along "model" hold the same rows
  lo, hi = rows[0][0], rows[-1][1]
  if hi - lo != sum(b - a for a, b in rows):
    raise ValueError("this process's devices do not hold a contiguous block of the batch")
  return lo, hi


def global_batch(
  mesh: jax.sharding.Mesh, local_batch: dict[str, np.ndarray]
) -> dict[str, jax.Array]:
  """This process's rows -> one global jax.Array per key, sharded over the data axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def replicate(mesh: jax.sharding.Mesh, host_value: np.ndarray) -> jax.Array:
  """A value every process holds in full -> one replicated global array.

  `jax.device_put(value, replicated(mesh))` fails when the mesh spans other processes' devices.
  """
  return jax.make_array_from_process_local_data(replicated(mesh), np.asarray(host_value))


# ----------------------------------------------------------------------------- multi-process
def multiprocess_launcher(environ: Mapping[str, str] = os.environ) -> str | None:
  """The launcher that started several copies of this program, read from its environment, or None.

  These are the environments `jax.distributed.initialize()` configures itself from (coordinator,
  process count and id). One process of them (a 1-task SLURM job, a single TPU VM) needs no
  distributed runtime.
  """
  if environ.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  if "SLURM_STEP_NODELIST" in environ and int(environ.get("SLURM_NTASKS", "1") or 1) > 1:
    return f"SLURM ({environ['SLURM_NTASKS']} tasks)"
  if int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return f"Open MPI ({environ['OMPI_COMM_WORLD_SIZE']} ranks)"
  workers = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
  if "," in workers:
    return f"Cloud TPU ({workers.count(',') + 1} workers)"
  if environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "Cloud TPU multislice"
  return None
