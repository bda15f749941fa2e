"""Training: train_and_evaluate, the loop, and its hooks on schedule (log, sample, evaluate, save).

The update itself is colorgan.training.step; where a run starts (a checkpoint, or a fresh state) is
colorgan.training.resume.
"""

import contextlib
import functools
import os
import time
from typing import Any, Iterator, NamedTuple

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from colorgan import checkpointing
from colorgan import configuration
from colorgan import errors
from colorgan import fileio
from colorgan import hints as hints_lib
from colorgan import models
from colorgan import parallel
from colorgan.data import pipeline
from colorgan.data import sources
from colorgan.evaluation import calibration
from colorgan.evaluation import evaluator
from colorgan.evaluation import hint_response
from colorgan.evaluation import records
from colorgan.models import precise_bn
from colorgan.training import class_prior
from colorgan.training import divergence
from colorgan.training import heartbeat as heartbeat_lib
from colorgan.training import interpolation
from colorgan.training import phases as phases_lib
from colorgan.training import preemption
from colorgan.training import reproducibility
from colorgan.training import resume
from colorgan.training import samples
from colorgan.training import specs
from colorgan.training import step as step_lib
from colorgan.training.state import GanState


def inference_variables(state: GanState) -> dict[str, Any]:
  """The generator's {"params", "batch_stats"} to show and evaluate: the EMA's when it is kept."""
  if state.g_ema:
    return {"params": state.g_ema["params"], "batch_stats": state.g_ema["batch_stats"]}
  return {"params": state.g_params, "batch_stats": state.g_batch_stats}


def checkpoint_ranking(
  scalars: dict[str, float] | None, eval_result: dict[str, Any] | None
) -> dict[str, float] | None:
  """What a checkpoint is ranked by (best_checkpoint_metric): the training scalars of the log
  interval that ends at it, and the model's metrics ("eval/fid", ...) of the evaluation at its step."""
  ranking = dict(scalars or {})
  if eval_result is not None:
    ranking.update(records.ranking_metrics(eval_result))
  return ranking or None


def _format_metrics(scalars: dict[str, float]) -> str:
  keys = ("d_loss", "g_adv", "g_recon", "ab_l1_lab", "d_real_logit", "d_fake_logit")
  return " ".join(f"{k}={scalars[k]:.4f}" for k in keys if k in scalars)


def _check_finite(metrics, config: ml_collections.ConfigDict, manager, step: int) -> None:
  """nan_policy="stop": raises Diverged naming the first non-finite step; "skip": logs the skips.

  Called only where the loop reads the device anyway (log, sample and save steps): no extra sync.
  """
  found = divergence.first_nonfinite(metrics)
  if found is None:
    return
  message = divergence.describe(*found)
  if config.nan_policy == "skip":
    logging.warning("nan_policy=skip, by step %d: %s (update skipped)", step, message)
    return
  latest = manager.latest_step()
  kept = (
    f"the last good checkpoint is {manager.directory}/{latest}"
    if latest is not None
    else "no checkpoint was saved yet"
  )
  raise errors.Diverged(
    f"{message}; stopped without saving this state, {kept} (lower the "
    "learning rates, or --config.nan_policy=skip to skip such updates)"
  )


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, source: sources.Source | None = None
) -> GanState:
  """Trains to config.total_steps, resuming from the latest checkpoint in workdir if there is one.

  Writes into workdir: config.json, reproducibility.json, checkpoints/<step>/, TensorBoard events
  (the workdir itself), samples/step_<N>.png grids (gray | generated | real) and, every
  config.eval_every_steps and at the end, eval/step_<N>.json (colorgan.evaluation.evaluator: the
  model and the gray baseline on the eval split).

  Raises:
    errors.ConfigError: the workdir's checkpoint was trained with a different config.
    preemption.Preempted: SIGTERM / SIGINT arrived; a checkpoint of the current step was saved.
    errors.Diverged: a non-finite loss or gradient under nan_policy="stop" (nothing saved).
    errors.RestoreError: the latest checkpoint does not fit this config or is damaged.
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.create_mesh(config)
  parallel.check_batch_size(config.batch_size, mesh)
  generator = models.create_generator(config)
  discriminator = models.create_discriminator(config)
  source = source or sources.create_source(config)  # benchmarks pass their own

  with (
    jax.set_mesh(mesh),
    preemption.StopRequest() as stop,
    heartbeat_lib.Heartbeat(total_steps=config.total_steps) as heartbeat,
  ):
    manager = checkpointing.create_manager(workdir, config)
    writer, latest, stopped_at = None, None, None
    try:
      start = resume.start(config, manager, generator, discriminator, mesh, heartbeat)
      writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() != 0)
      _write_run_record(config, workdir, writer, int(start.state.step))
      state, stopped_at = _train_loop(
        config,
        workdir,
        start,
        source=source,
        generator=generator,
        discriminator=discriminator,
        mesh=mesh,
        manager=manager,
        writer=writer,
        stop=stop,
        heartbeat=heartbeat,
      )
    finally:
      # Closed on any exit, an error at start included: a manager left open makes orbax's shutdown
      # print pages of event-loop tracebacks under the one-line error.
      with heartbeat.activity("waiting for the last checkpoint to be written"):
        manager.wait_until_finished()  # a save in flight commits (a good state: it was checked)
      latest = manager.latest_step()
      manager.close()
      if writer is not None:
        writer.flush()
  if stopped_at is not None:
    raise preemption.Preempted(
      f"stopped by {stop.signal_name} at step {stopped_at}: saved "
      f"{manager.directory}/{latest}; rerun the same command to resume"
    )
  return state


def _write_run_record(
  config: ml_collections.ConfigDict, workdir: str, writer, start_step: int
) -> None:
  """config.json and reproducibility.json (the chief's), and the hyperparameters of a new run."""
  if jax.process_index() == 0:
    fileio.write_text(
      os.path.join(workdir, "config.json"),
      config.to_json_best_effort(indent=2, sort_keys=True) + "\n",
    )
    reproducibility.write_record(workdir, config, start_step=start_step)
  if start_step == 0:
    writer.write_hparams(configuration.flatten(config))


class _LoopEnd(NamedTuple):
  state: GanState
  step: int | None  # the step a stop request ended the loop at; None: it ran to total_steps


def _train_loop(
  config: ml_collections.ConfigDict,
  workdir: str,
  start: resume.Start,
  *,
  source: sources.Source,
  generator: nn.Module,
  discriminator: nn.Module,
  mesh: jax.sharding.Mesh,
  manager,
  writer,
  stop: preemption.StopRequest,
  heartbeat: heartbeat_lib.Heartbeat,
) -> _LoopEnd:
  """Steps start + 1 .. total_steps: logs, samples, evaluations and checkpoints on schedule."""
  state, start_step = start.state, int(start.state.step)
  heartbeat.set_activity("compiling the train step")
  phases = phases_lib.from_config(config)
  make = functools.partial(step_lib.make_train_step, config, generator, discriminator, mesh)
  step_fns = {"gan": make()}  # the phase -> its step, compiled only for the phases still ahead
  if phases.reconstruction_end > start_step:
    step_fns["reconstruction"] = make(adversarial=False)
  if phases.d_warmup_end > start_step:
    step_fns["d_warmup"] = make(train_g=False)
  if phases.d_warmup_end:
    logging.info("Phases: %s", phases_lib.describe(phases, config.total_steps))
  hooks = _Hooks(config, workdir, generator, mesh, source, manager, writer, heartbeat)
  rows = parallel.process_batch_rows(mesh, config.batch_size)
  if config.model.ab_head == "classification" and start_step == 0:
    weights = class_prior.estimate(config, source.train, rows)
    state = state.replace(ab_class_weights=parallel.replicate(mesh, weights))
  # The stream continues where the checkpoint left it: examples, not steps, in case the batch
  # size changed (allow_config_change).
  train_iter = iter(
    pipeline.create_train_dataset(
      config, source.train, rows=rows, start_step=start.data_start
    ).as_numpy_iterator()
  )
  logging.info(
    "Training %d -> %d steps on %d device(s), %d process(es); global batch %d",
    start_step,
    config.total_steps,
    jax.device_count(),
    jax.process_count(),
    config.batch_size,
  )
  hooks.start_interval(start_step)
  for step in range(start_step + 1, config.total_steps + 1):
    heartbeat.step = step
    batch = parallel.global_batch(mesh, next(train_iter))
    state, step_metrics = step_fns[phases.kind(step)](state, batch)
    if config.phases.interpolate and step == phases.reconstruction_end:
      state = interpolation.keep_anchor(state, inference_variables(state))
    hooks.add(step, step_metrics, first=step == start_step + 1)
    stopping = stop.requested(step)
    last = stopping or step == config.total_steps
    if last:  # no batch is needed any more
      with _dropping_the_pipeline(heartbeat):
        train_iter = None
    examples = (start.data_start + step - start_step) * config.batch_size
    hooks.run(step, state, saving=last or manager.should_save(step), examples=examples)
    if stopping:
      return _LoopEnd(state, step)
  return _LoopEnd(state, None)


@contextlib.contextmanager
def _dropping_the_pipeline(heartbeat: heartbeat_lib.Heartbeat) -> Iterator[None]:
  """Around the last reference to the pipeline's iterator being dropped: its destructor waits for
  the images its threads are decoding ahead (seconds on a busy machine). Dropped while the device
  still runs the last step, and said so when it is slow."""
  closing = time.time()
  with heartbeat.activity("stopping the input pipeline (its threads finish the images in flight)"):
    yield
  if time.time() - closing > 2:
    logging.info("The input pipeline took %.1f s to stop", time.time() - closing)


class _Hooks:
  """What the loop does besides stepping, each on its schedule: log, sample, evaluate, save."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str,
    generator: nn.Module,
    mesh: jax.sharding.Mesh,
    source: sources.Source,
    manager,
    writer,
    heartbeat: heartbeat_lib.Heartbeat,
  ):
    self.config, self.workdir, self.manager, self.writer = config, workdir, manager, writer
    self.heartbeat, self.generator, self.mesh, self.source = heartbeat, generator, mesh, source
    # Replicated in and out: every process computes the grid (a collective), the chief writes it.
    self.colorize = jax.jit(
      functools.partial(samples.colorize_batch, generator), out_shardings=parallel.replicated(mesh)
    )
    self.sample_images = parallel.replicate(
      mesh, pipeline.load_eval_images(config, source.eval, config.num_samples)
    )
    self.evaluator = (
      evaluator.Evaluator(
        config, functools.partial(models.predict_ab, generator), mesh, source.eval
      )
      if config.eval_every_steps
      else None
    )
    # One program per merge and per read, not one per metric and operation: eager operations on
    # global arrays are where a 2-process CPU run deadlocked (see evaluator.accumulate_step).
    self.merge_metrics = jax.jit(
      lambda total, new: total.merge(new), donate_argnums=0, out_shardings=parallel.replicated(mesh)
    )
    self.compute_metrics = jax.jit(
      lambda metrics: metrics.compute(), out_shardings=parallel.replicated(mesh)
    )
    # clu writes steps_per_sec to TensorBoard; the loop's own rate is for its log line only.
    self.report_progress = periodic_actions.ReportProgress(
      num_train_steps=config.total_steps, writer=writer, every_steps=config.log_every_steps
    )
    self.interval_metrics, self.interval_start, self.interval_start_step = None, 0.0, 0
    self.precise_stats = None  # estimate_precise_bn's, at the last step

  def start_interval(self, step: int) -> None:
    self.interval_metrics, self.interval_start, self.interval_start_step = None, time.time(), step

  def add(self, step: int, step_metrics, *, first: bool) -> None:
    """Adds a step's metrics to the log interval's."""
    if first:
      jax.block_until_ready(step_metrics)  # once: the first step's time is mostly compilation
      logging.info(
        "step %d done in %.1f s (compiling the train step included)",
        step,
        time.time() - self.interval_start,
      )
      self.heartbeat.set_activity("training")
    self.interval_metrics = (
      step_metrics
      if self.interval_metrics is None
      else self.merge_metrics(self.interval_metrics, step_metrics)
    )
    self.report_progress(step)

  def run(self, step: int, state: GanState, *, saving: bool, examples: int) -> None:
    """The hooks whose schedule falls on `step`, after the divergence check where any reads."""
    config, end = self.config, step == self.config.total_steps
    logging_now = step % config.log_every_steps == 0 or end
    sampling = len(self.sample_images) and (step % config.sample_every_steps == 0 or end)
    if saving or logging_now or sampling:
      _check_finite(self.interval_metrics, config, self.manager, step)
    scalars = self.log(step) if logging_now else None
    if end and config.precise_bn_batches:  # before anything shows the generator
      self.estimate_precise_bn(step, state)
    if sampling:
      self.sample(step, state)
    eval_result = None
    if self.evaluator and (step % config.eval_every_steps == 0 or end):
      eval_result = self.evaluate(step, state)
    if saving:
      self.save(step, state, examples, checkpoint_ranking(scalars, eval_result))
    if end and hints_lib.enabled(config):  # after the save: the last state is kept whatever happens
      self.measure_hint_response(step, state, eval_result)
    if end and config.phases.interpolate:
      self.write_interpolation(state)
    if end and config.vividness.calibrate:
      self.heartbeat.set_activity("choosing the vividness on the eval photos")
      calibration.calibrate_run(config, self.shown(state), self.source.eval, self.workdir)

  def shown(self, state: GanState) -> dict[str, Any]:
    """inference_variables(state), with the precise BatchNorm statistics once they are estimated."""
    return precise_bn.apply(inference_variables(state), self.precise_stats)

  def _train_batches(self, count: int) -> list[np.ndarray]:
    """`count` batches (this process's rows) of a fresh train stream, uint8 RGB."""
    rows = parallel.process_batch_rows(self.mesh, self.config.batch_size)
    stream = pipeline.create_train_dataset(self.config, self.source.train, rows=rows)
    return [b["image"] for b in stream.take(count).as_numpy_iterator()]

  def estimate_precise_bn(self, step: int, state: GanState) -> None:
    """The shown generator's BatchNorm statistics re-estimated with its weights fixed
    (models/precise_bn.py): used by everything after, and in WORKDIR/precise_bn.npz."""
    count = self.config.precise_bn_batches
    with self.heartbeat.activity(f"re-estimating BatchNorm statistics on {count} batches"):
      variables = jax.device_get(inference_variables(state))
      stats = interpolation.reestimate(self.generator, variables, self._train_batches(count))
    if jax.process_count() > 1:  # each process saw its own rows: process 0's for every process
      stats = jax.device_get(multihost_utils.broadcast_one_to_all(stats))
    self.precise_stats = stats
    if jax.process_index() == 0:
      path = precise_bn.write(self.workdir, step, stats)
      logging.info("Precise BatchNorm statistics from %d training batches: %s", count, path)

  def write_interpolation(self, state: GanState) -> None:
    """WORKDIR/interpolation.npz (training/interpolation.py), on batches of a fresh train stream."""
    self.heartbeat.set_activity("re-estimating BatchNorm statistics for weight interpolation")
    batches = self._train_batches(interpolation.STATS_BATCHES)
    interpolation.write(self.generator, state.g_anchor, self.shown(state), batches, self.workdir)

  def log(self, step: int) -> dict[str, float]:
    """Writes the log interval's averages and learning rates; returns them."""
    config = self.config
    scalars = {k: float(v) for k, v in self.compute_metrics(self.interval_metrics).items()}
    scalars.update(specs.learning_rates(config, step))
    self.writer.write_scalars(step, scalars)
    steps_per_sec = (step - self.interval_start_step) / (time.time() - self.interval_start)
    eta_min = (config.total_steps - step) / steps_per_sec / 60
    logging.info(
      "step %d/%d %s | %.2f steps/s, ETA %.1f min",
      step,
      config.total_steps,
      _format_metrics(scalars),
      steps_per_sec,
      eta_min,
    )
    self.start_interval(step)
    return scalars

  def sample(self, step: int, state: GanState) -> None:
    with self.heartbeat.activity("drawing the sample grid"):
      grid = samples.sample_grid(
        *jax.device_get(self.colorize(self.shown(state), self.sample_images))
      )
    if jax.process_index() == 0:
      path = samples.write_samples(self.workdir, step, grid, self.writer)
      logging.info("Wrote samples %s", path)

  def evaluate(self, step: int, state: GanState) -> dict[str, Any]:
    with self.heartbeat.activity(f"evaluating on {self.evaluator.num_images} photos"):
      return evaluator.evaluate_and_record(
        self.evaluator, self.shown(state), step, self.workdir, self.writer
      )

  def measure_hint_response(
    self, step: int, state: GanState, eval_result: dict[str, Any] | None
  ) -> None:
    """At the end of a hints run: how much 10 points raise PSNR, logged and in the workdir."""
    response = eval_result and hint_response.from_result(eval_result)
    if not response:  # the last evaluation did not score 0 and 10 points: only those are run
      with self.heartbeat.activity("measuring the response to hints"):
        response = hint_response.measure(
          self.config,
          functools.partial(models.predict_ab, self.generator),
          self.mesh,
          self.source.eval,
          self.shown(state),
          step,
        )
    if jax.process_index() == 0:
      hint_response.log(response, hint_response.record(response, self.workdir))

  def save(
    self, step: int, state: GanState, examples: int, ranking: dict[str, float] | None
  ) -> None:
    config = self.config
    checkpointing.save(
      self.manager,
      step,
      state,
      config,
      force=True,
      data=checkpointing.DataPosition(examples, config.batch_size, config.seed),
      metrics=ranking,
    )
