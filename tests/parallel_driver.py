"""Trains a few steps on several device meshes inside one process that has 8 CPU devices.

Run by tests/test_parallel.py in a subprocess (the CPU device count is fixed when JAX starts its
backend, and pytest's process already has one device):

  python tests/parallel_driver.py OUT.npz '{"batch_size": 8, "total_steps": 3}' 1 8 4x2

Each mesh argument is DATA or DATAxMODEL devices (the first DATA*MODEL devices). Every mesh trains
from the same initial state on the same global batches of the real input pipeline; OUT.npz gets, per
mesh M, "M|metrics" ([steps, len(METRIC_NAMES)]) and "M|<key path>" for each leaf of the final
GanState (PRNG keys as their key data).
"""

import itertools
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

if __name__ == "__main__":  # not when the test imports state_leaves: its process has 1 device
  jax.config.update("jax_num_cpu_devices", 8)  # before anything (colorgan's imports) starts JAX

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from colorgan.data import pipeline  # noqa: E402
from colorgan.data import sources  # noqa: E402
from colorgan import models  # noqa: E402
from colorgan import parallel  # noqa: E402
from colorgan.training import step as step_lib  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402  (also disables most XLA optimizations)


def state_leaves(state) -> dict[str, np.ndarray]:
  """{key path: host array} of a GanState (shared with the test, which flattens restored states)."""
  leaves = {}
  for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    leaves[jax.tree_util.keystr(path)] = np.asarray(jax.device_get(x))
  return leaves


def main(out: str, overrides: dict, meshes: list[str]) -> None:
  config = tiny_config(**overrides)
  source = sources.create_source(config)
  dataset = pipeline.create_train_dataset(config, source.train, rows=(0, config.batch_size))
  batches = list(itertools.islice(dataset.as_numpy_iterator(), config.total_steps))
  generator = models.create_generator(config)
  discriminator = models.create_discriminator(config)

  # One initial state for all meshes (init_train_state compiles for as long as a step does).
  initial = step_lib.init_train_state(
    config, generator, discriminator, parallel.create_mesh(config, devices=jax.devices()[:1])
  )
  results = {}
  for name in meshes:
    data, model = (int(n) for n in (name.split("x") + ["1"])[:2])
    config.mesh.data, config.mesh.model = data, model
    mesh = parallel.create_mesh(config, devices=jax.devices()[: data * model])
    parallel.check_batch_size(config.batch_size, mesh)
    # A copy (the step donates its state argument), made outside the mesh context: `initial` lives
    # on another mesh.
    state = jax.device_put(jax.tree.map(jnp.copy, initial), parallel.replicated(mesh))
    with jax.set_mesh(mesh):
      step_fn = step_lib.make_train_step(config, generator, discriminator, mesh)
      metrics = []
      for batch in batches:
        state, step_metrics = step_fn(state, parallel.global_batch(mesh, batch))
        computed = step_metrics.compute()
        metrics.append([float(computed[k]) for k in step_lib.METRIC_NAMES])
    results[f"{name}|metrics"] = np.array(metrics)
    results.update({f"{name}|{k}": v for k, v in state_leaves(state).items()})
    print(f"mesh {name}: {dict(mesh.shape)} done", flush=True)
  np.savez(out, **results)


if __name__ == "__main__":
  main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:])
