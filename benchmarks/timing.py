"""What the benchmarks share: compile and time a program, XLA's FLOP and memory counts, and the
timed train step, generator inference and input pipeline (train_step.py, input_pipeline.py and
accelerator_check.py call these).
"""

import os
import statistics
import time

import jax
import numpy as np

from colorgan import models
from colorgan.data import pipeline
from colorgan.data import sources
from colorgan import parallel
from colorgan.training import step as step_lib


def flops(program) -> float:
  """XLA's FLOP count of a compiled (or lowered) program (0 when the backend does not say)."""
  analysis = program.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per device program
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def traced_flops(jitted, *args) -> float:
  """XLA's FLOP count of `jitted` on `args` as traced, before any backend compiles it: the same on
  every backend, where the compiled count depends on what each backend fuses or hands to a library."""
  return flops(jitted.lower(*args))


def program_bytes(compiled) -> int | None:
  """Device memory a compiled program needs (arguments, outputs and temporaries, less what the
  outputs reuse of the donated arguments), by XLA's memory_analysis; None when it does not say."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(
    stats.argument_size_in_bytes
    + stats.output_size_in_bytes
    + stats.temp_size_in_bytes
    - stats.alias_size_in_bytes
  )


def compile_timed(jitted, *args):
  """(the compiled program, seconds to lower and compile it)."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def time_calls(call, steps: int, warmup: int) -> list[float]:
  """Seconds of each of `steps` calls of `call` (which waits for its result), after `warmup`."""
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    call()
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return times


def summarize(name: str, times: list[float], batch: int, flop: float) -> dict[str, float]:
  """Prints one line and returns {name_s (median), name_min_s, name_max_s, name_img_per_s,
  name_gflop (per call), name_gflop_per_s}."""
  median = statistics.median(times)
  print(
    f"{name}: median {median * 1000:.1f} ms (min {min(times) * 1000:.1f}, max "
    f"{max(times) * 1000:.1f}) -> {batch / median:.2f} img/s; {flop / 1e9:.1f} GFLOP per call, "
    f"{flop / median / 1e9:.1f} GFLOP/s",
    flush=True,
  )
  return {
    f"{name}_s": median,
    f"{name}_min_s": min(times),
    f"{name}_max_s": max(times),
    f"{name}_img_per_s": batch / median,
    f"{name}_gflop": flop / 1e9,
    f"{name}_gflop_per_s": flop / median / 1e9,
  }


def time_train_step(
  config,
  generator,
  discriminator,
  mesh,
  state,
  images: np.ndarray,
  *,
  steps: int,
  warmup: int,
  name: str = "train",
):
  """The jitted joint train step of `config` on uint8 RGB `images` [B, H, W, 3], under `mesh`.

  Returns:
    (summarize's figures plus name_compile_s and name_program_bytes, the state after the calls:
    the step donates its input, so the caller continues with this one).
  """
  batch = {"image": jax.device_put(images, parallel.batch_sharding(mesh))}
  step, compile_s = compile_timed(
    step_lib.make_train_step(config, generator, discriminator, mesh), state, batch
  )
  print(f"{name} step compiled in {compile_s:.2f} s", flush=True)

  def call():
    nonlocal state
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))

  times = time_calls(call, steps, warmup)
  result = summarize(name, times, len(images), flops(step))
  result.update({f"{name}_compile_s": compile_s, f"{name}_program_bytes": program_bytes(step)})
  return result, state


def time_generator(
  generator, g_params, g_batch_stats, l, *, steps: int, warmup: int, name: str = "infer"
) -> dict[str, float]:
  """Generator inference (models.predict_ab) on L `l` [B, H, W, 1]: summarize's figures plus
  name_compile_s and name_program_bytes."""
  generate = jax.jit(
    lambda params, stats, l: models.predict_ab(
      generator, {"params": params, "batch_stats": stats}, l
    )
  )
  compiled, compile_s = compile_timed(generate, g_params, g_batch_stats, l)
  times = time_calls(
    lambda: compiled(g_params, g_batch_stats, l).block_until_ready(), steps, warmup
  )
  result = summarize(name, times, len(l), flops(compiled))
  result.update({f"{name}_compile_s": compile_s, f"{name}_program_bytes": program_bytes(compiled)})
  return result


def time_input_pipeline(
  config, *, steps: int, warmup: int, max_seconds: float | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
  """This host's training stream of `config` (one process: every row of the global batch).

  Skips `warmup` batches (start-up, autotuning), then times `steps` batches, or fewer when
  `max_seconds` pass first. Raises errors.ConfigError for a source it cannot read.

  Returns:
    (figures, the last batch read). The figures: images_per_s, batch_size, image_size, steps
    (timed), seconds, source, train_images, cpus,
    start_s (source check + first batch), cpu_seconds and images_per_cpu_s (the pipeline's cost,
    meaningful on a busy machine), load_avg_1min.
  """
  start = time.perf_counter()
  source = sources.create_source(config)
  batch_size = config.batch_size
  iterator = pipeline.create_train_dataset(
    config, source.train, rows=(0, batch_size)
  ).as_numpy_iterator()
  batch = next(iterator)
  start_s = time.perf_counter() - start
  for _ in range(warmup):
    batch = next(iterator)
  train_images = source.train.num_images
  print(
    f"{source.name}: {train_images} train images; timing {steps} batches of {batch_size} at "
    f"{config.image_size} px",
    flush=True,
  )
  cpu_start = time.process_time()
  start = last = time.perf_counter()
  done = 0
  while done < steps and (max_seconds is None or time.perf_counter() - start < max_seconds):
    batch = next(iterator)
    done += 1
    if time.perf_counter() - last > 5:
      last = time.perf_counter()
      print(f"  {done}/{steps}: {done * batch_size / (last - start):.1f} images/s", flush=True)
  seconds = time.perf_counter() - start
  cpu_seconds = time.process_time() - cpu_start
  figures = {
    "images_per_s": round(done * batch_size / seconds, 1),
    "batch_size": batch_size,
    "image_size": config.image_size,
    "steps": done,
    "seconds": round(seconds, 2),
    "source": source.name,
    "train_images": train_images,
    "cpus": len(os.sched_getaffinity(0)),
    "start_s": round(start_s, 2),
    # CPU time of all threads: images per CPU-second is the pipeline's cost, whatever else runs.
    "cpu_seconds": round(cpu_seconds, 2),
    "images_per_cpu_s": round(done * batch_size / cpu_seconds, 1),
    "load_avg_1min": round(os.getloadavg()[0], 2),
  }
  return figures, batch
