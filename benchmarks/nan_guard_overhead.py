"""What the non-finite guard costs per training step, interleaved: skip, stop, and no guard at all.

  python benchmarks/nan_guard_overhead.py --config=configs/quickstart.py --steps=30

The guard (colorgan/divergence.py) is the `finite` flag computed inside the jitted step (every loss
term and both gradients' global norms) and, with nan_policy="skip", the select that keeps the old
state when the flag is down. "stop" (the default) computes only the flag; "none" traces the step with
constants for the flag and the gradient norms (so XLA computes neither). Prints the median
seconds per step of each (wall and process CPU time) and, as the last line, a JSON object with
the overheads relative to "none".
"""

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from colorgan.training import divergence  # noqa: E402
from colorgan.data import pipeline  # noqa: E402
from colorgan.data import sources  # noqa: E402
from colorgan import models  # noqa: E402
from colorgan import parallel  # noqa: E402
from colorgan.training import step as step_lib  # noqa: E402

VARIANTS = ("skip", "stop", "none")


def load_config(path: str):
  spec = importlib.util.spec_from_file_location("config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@contextlib.contextmanager
def without_guard():
  """While a step is traced: constants instead of the finite flag and the gradient norms."""
  saved = divergence.all_finite, divergence.grad_norm
  divergence.all_finite = lambda scalars: jnp.array(True)
  divergence.grad_norm = lambda grads: jnp.zeros((), jnp.float32)
  try:
    yield
  finally:
    divergence.all_finite, divergence.grad_norm = saved


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/quickstart.py")
  parser.add_argument("--steps", type=int, default=30)
  args = parser.parse_args()
  config = load_config(args.config)
  mesh = parallel.create_mesh()
  generator, discriminator = models.create_generator(config), models.create_discriminator(config)
  source = sources.create_source(config)
  ds = pipeline.create_train_dataset(
    config, source.train, rows=parallel.process_batch_rows(mesh, config.batch_size)
  )
  fns, states = {}, {}
  with jax.set_mesh(mesh):
    batch = parallel.global_batch(mesh, next(iter(ds.as_numpy_iterator())))
    for name in VARIANTS:  # trace and compile each now (the swap is read at trace time)
      variant = config.copy_and_resolve_references()
      variant.nan_policy = "skip" if name == "skip" else "stop"
      with without_guard() if name == "none" else contextlib.nullcontext():
        fns[name] = step_lib.make_train_step(variant, generator, discriminator, mesh)
        states[name] = step_lib.init_train_state(config, generator, discriminator, mesh)
        states[name], _ = fns[name](states[name], batch)
        jax.block_until_ready(states[name])
    times = {name: ([], []) for name in fns}
    for _ in range(args.steps):
      for name, fn in fns.items():
        wall, cpu = time.perf_counter(), time.process_time()
        states[name], _ = fn(states[name], batch)
        jax.block_until_ready(states[name])
        times[name][0].append(time.perf_counter() - wall)
        times[name][1].append(time.process_time() - cpu)
  result = {"config": args.config, "steps": args.steps}
  for name, (wall, cpu) in times.items():
    result[name] = {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}
    print(
      f"{name:>4}: {result[name]['wall_s']:.4f} s/step wall, "
      f"{result[name]['cpu_s']:.4f} s/step CPU (median of {args.steps})"
    )
  for name in ("skip", "stop"):
    result[f"overhead_wall_{name}"] = result[name]["wall_s"] / result["none"]["wall_s"] - 1
    result[f"overhead_cpu_{name}"] = result[name]["cpu_s"] / result["none"]["cpu_s"] - 1
  print(json.dumps(result))


if __name__ == "__main__":
  main()
