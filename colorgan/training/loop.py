"""Training: create_train_state, the joint D + G train_step, and the train_and_evaluate loop."""

import functools
import json
import os
import time
from typing import Any, Callable, NamedTuple

from absl import logging
from clu import metric_writers
from clu import metrics as clu_metrics
from clu import periodic_actions
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image

from colorgan import checkpointing
from colorgan import color
from colorgan import configuration
from colorgan.training import divergence
from colorgan import fileio
from colorgan.training import heartbeat as heartbeat_lib
from colorgan import hints as hints_lib
from colorgan.evaluation import evaluator as evaluate
from colorgan.data import pipeline as input_pipeline
from colorgan.training import losses
from colorgan import models
from colorgan import parallel
from colorgan.training import preemption
from colorgan.training import reproducibility
from colorgan.training import schedules
from colorgan.training import warm_start
from colorgan.training.state import GanState

# Every train_step returns these scalars (zeros where a term is off), averaged over each log interval.
METRIC_NAMES = (
    "d_loss", "d_adv", "d_penalty", "d_real_logit", "d_fake_logit",
    "g_loss", "g_adv", "g_adv_weighted", "g_recon", "g_recon_weighted", "ab_l1_lab",
    "nonfinite",  # the fraction of steps with a non-finite loss or gradient (skipped or fatal)
)


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  """Averages of METRIC_NAMES over a log interval, and the interval's first non-finite step."""
  __annotations__ = {**{name: clu_metrics.Average.from_output(name) for name in METRIC_NAMES},
                     "first_nonfinite": divergence.FirstNonFinite}

  def compute(self) -> dict[str, jax.Array]:
    """The averages; first_nonfinite is read by the loop's NaN check (divergence.first_nonfinite)."""
    return {k: v for k, v in super().compute().items() if k in METRIC_NAMES}


class LossSpec(NamedTuple):
  """The losses named in config.loss, looked up once; static in the jitted step."""
  gan: losses.GanLoss | None  # None: loss.gan="none", reconstruction only and no D step
  gan_weight: float
  reconstruction: Callable[..., jax.Array]
  reconstruction_weight: float
  huber_delta: float
  penalty: Callable[..., jax.Array]
  penalty_weight: float


def create_loss_spec(config: ml_collections.ConfigDict) -> LossSpec:
  cfg = config.loss
  adversarial = cfg.gan != "none"
  return LossSpec(
      gan=losses.GAN_LOSSES[cfg.gan] if adversarial else None,
      gan_weight=cfg.gan_weight,
      reconstruction=losses.RECONSTRUCTION_LOSSES[cfg.reconstruction],
      reconstruction_weight=cfg.l1_weight,
      huber_delta=cfg.huber_delta,
      penalty=losses.PENALTIES[losses.resolve_penalty(cfg.gan, cfg.penalty) if adversarial
                               else "none"],
      penalty_weight=cfg.penalty_weight)


class OptimSpec(NamedTuple):
  """How the step optimizes (config.optim, config.g_ema_decay); static in the jitted step."""
  g_schedule: schedules.Schedule
  d_schedule: schedules.Schedule
  d_steps: int               # D updates per G update, on the same batch and generated ab
  g_ema_decay: float         # > 0: state.g_ema follows G's variables
  g_first_update_step: int   # the train step of G's first update (after config.d_warmup_steps)


def create_schedules(config: ml_collections.ConfigDict):
  """(g_schedule, d_schedule): each network's learning rate as a function of the train step."""
  cfg = config.optim
  make = functools.partial(schedules.create_schedule, total_steps=config.total_steps,
                           warmup_steps=cfg.warmup_steps, decay_steps=cfg.decay_steps)
  return make(cfg.g_schedule, cfg.g_learning_rate), make(cfg.d_schedule, cfg.d_learning_rate)


def create_optim_spec(config: ml_collections.ConfigDict) -> OptimSpec:
  g_schedule, d_schedule = create_schedules(config)
  return OptimSpec(g_schedule=g_schedule, d_schedule=d_schedule, d_steps=config.optim.d_steps,
                   g_ema_decay=config.g_ema_decay, g_first_update_step=config.d_warmup_steps)


def _adam(learning_rate, b1, b2, clip_norm):
  clip = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
  return optax.chain(*clip, optax.adam(learning_rate, b1=b1, b2=b2))


def create_optimizers(config: ml_collections.ConfigDict):
  """Adam for each network (pix2pix: 2e-4, betas (0.5, 0.999)), after optional gradient clipping.

  The learning rate is an injected hyperparameter (a leaf of the optimizer state): train_step sets it
  at every update from the network's schedule, evaluated at the train step.
  """
  cfg = config.optim
  adam = optax.inject_hyperparams(_adam, static_args=("b1", "b2", "clip_norm"))
  make = functools.partial(adam, b1=cfg.b1, b2=cfg.b2, clip_norm=cfg.clip_grad_norm)
  return make(learning_rate=cfg.g_learning_rate), make(learning_rate=cfg.d_learning_rate)


def _with_learning_rate(opt_state, schedule: schedules.Schedule, step: jax.Array):
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": schedule(step)})


def ema_decay(decay: float, num_updates: jax.Array) -> jax.Array:
  """The decay of the EMA's update after `num_updates` earlier ones: min(decay, (1 + t) / (10 + t)).

  A warmed-up average (as TensorFlow's ExponentialMovingAverage with num_updates): the EMA starts at
  the random initialization, and with a fixed decay of 0.999 that noise would still be 55% of the
  average after 600 steps (0.999**600). The warm-up forgets it within tens of steps (under 1e-7 of it
  is left after 20), then the decay settles at `decay`.
  """
  t = jnp.asarray(num_updates, jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(ema, new, decay: jax.Array | float):
  """ema <- decay * ema + (1 - decay) * new, leaf by leaf."""
  return jax.tree.map(lambda e, x: decay * e + (1.0 - decay) * x, ema, new)


def create_train_state(config: ml_collections.ConfigDict, generator: nn.Module,
                       discriminator: nn.Module, rng: jax.Array) -> GanState:
  """Initializes both networks and optimizers (pure: jit it with out_shardings to place the state)."""
  g_rng, d_rng, state_rng = jax.random.split(rng, 3)
  size = config.image_size
  l = jnp.zeros((1, size, size, 1), jnp.float32)
  ab = jnp.zeros((1, size, size, 2), jnp.float32)
  g_vars = generator.init(g_rng, l, train=False)
  d_vars = discriminator.init(d_rng, l, ab, train=False)
  g_tx, d_tx = create_optimizers(config)
  g_batch_stats = g_vars.get("batch_stats", {})
  return GanState(
      step=jnp.zeros((), jnp.int32), rng=state_rng,
      g_params=g_vars["params"], g_batch_stats=g_batch_stats,
      g_opt_state=g_tx.init(g_vars["params"]),
      d_params=d_vars["params"],
      d_opt_state=d_tx.init(d_vars["params"]),
      g_tx=g_tx, d_tx=d_tx,
      g_ema=({"params": g_vars["params"], "batch_stats": g_batch_stats}
             if config.g_ema_decay > 0 else {}))


def train_step(state: GanState, batch: dict[str, jax.Array], *, generator: nn.Module,
               discriminator: nn.Module, loss: LossSpec, optim: OptimSpec,
               hints: hints_lib.HintSpec | None = None, train_g: bool = True,
               skip_nonfinite: bool = False) -> tuple[GanState, Any]:
  """One joint update: the discriminator on (real, generated), then the generator through the new D.

  As in pix2pix, the generator runs forward once; its output feeds the D step (gradient stopped) and
  the G step, whose gradient is pulled back through that same forward pass. Variants, all static:
  loss.gan None (L1 pretraining) skips D; train_g=False (D warm-up) leaves G's weights and statistics
  untouched; optim.d_steps > 1 updates D that many times on this batch before G's update.

  Args:
    state: the replicated GanState.
    batch: {"image": uint8 [B, H, W, 3]} RGB, sharded over the data axis.
    hints: config.hints (None: off): both networks also see hints simulated from the batch's own
      colors (hints.simulate), drawn from the step's rng.
    skip_nonfinite: keep the networks and optimizer states when a loss or gradient is not finite
      (config.nan_policy="skip"); the step still advances.

  Returns:
    The new state and TrainMetrics of this step (zeros for the terms of a network not updated).
  """
  l, real_ab = color.rgb_uint8_to_model_lab(batch["image"])
  step_rng = jax.random.fold_in(state.rng, state.step)
  g_inputs = (l,)
  if hints is not None:  # G and D see them (models._patchgan)
    step_rng, hint_rng = jax.random.split(step_rng)
    g_inputs = (l, hints_lib.simulate(hint_rng, real_ab, hints))
  dropout_rng, penalty_rng = jax.random.split(step_rng)
  metrics = {name: jnp.zeros((), jnp.float32)
             for name in METRIC_NAMES + ("d_grad_norm", "g_grad_norm")}

  def generate(g_params):
    fake_ab, updates = generator.apply(
        {"params": g_params, "batch_stats": state.g_batch_stats}, *g_inputs, train=True,
        rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    return fake_ab, updates["batch_stats"]

  fake_ab, pull_back_to_g, g_batch_stats = jax.vjp(generate, state.g_params, has_aux=True)

  def discriminate(d_params, ab):
    # D only ever runs in training mode, on the statistics of the batch it sees (as pix2pix): its
    # BatchNorm running averages would never be read, so they are not kept (flax creates them for
    # the call, mutable, and they are dropped).
    logits, _ = discriminator.apply({"params": d_params}, l, ab, *g_inputs[1:], train=True,
                                    mutable=["batch_stats"])
    return logits

  # ---- discriminator step(s). Fake and real pass separately (BatchNorm sees each batch on its own),
  # as in pix2pix.
  d_params, d_opt_state = state.d_params, state.d_opt_state
  if loss.gan is not None:
    def d_loss_fn(d_params, rng):
      fake_logits = discriminate(d_params, jax.lax.stop_gradient(fake_ab))
      real_logits = discriminate(d_params, real_ab)
      adv = loss.gan.discriminator(real_logits=real_logits, fake_logits=fake_logits)
      penalty = loss.penalty(lambda ab: discriminate(d_params, ab), real_ab=real_ab,
                             fake_ab=jax.lax.stop_gradient(fake_ab), rng=rng)
      aux = dict(d_adv=adv, d_penalty=penalty, d_real_logit=jnp.mean(real_logits),
                 d_fake_logit=jnp.mean(fake_logits))
      return adv + loss.penalty_weight * penalty, aux

    def d_update(d_params, opt_state, rng):
      (d_loss, aux), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params, rng)
      updates, opt_state = state.d_tx.update(grads, opt_state, d_params)
      return optax.apply_updates(d_params, updates), opt_state, dict(
          d_loss=d_loss, d_grad_norm=divergence.grad_norm(grads), **aux)

    d_opt_state = _with_learning_rate(d_opt_state, optim.d_schedule, state.step)
    d_params, d_opt_state, d_metrics = d_update(d_params, d_opt_state, penalty_rng)
    if optim.d_steps > 1:  # a loop, not an unrolled body: compile time stays that of one D step
      d_params, d_opt_state, d_metrics = jax.lax.fori_loop(
          1, optim.d_steps,
          lambda i, carry: d_update(*carry[:2], jax.random.fold_in(penalty_rng, i)),
          (d_params, d_opt_state, d_metrics))
    metrics.update(d_metrics)

  # ---- generator step, through the updated discriminator.
  def g_loss_fn(fake_ab):
    recon = loss.reconstruction(fake_ab, real_ab, huber_delta=loss.huber_delta)
    aux = dict(g_recon=recon, g_recon_weighted=loss.reconstruction_weight * recon)
    if loss.gan is None:
      return aux["g_recon_weighted"], aux
    fake_logits = discriminate(d_params, fake_ab)
    adv = loss.gan.generator(fake_logits=fake_logits)
    aux.update(g_adv=adv, g_adv_weighted=loss.gan_weight * adv)
    return aux["g_adv_weighted"] + aux["g_recon_weighted"], aux

  g_params, g_opt_state, g_ema = state.g_params, state.g_opt_state, state.g_ema
  if train_g:
    (g_loss, g_aux), d_fake_ab = jax.value_and_grad(g_loss_fn, has_aux=True)(fake_ab)
    (g_grads,) = pull_back_to_g(d_fake_ab)
    g_opt_state = _with_learning_rate(g_opt_state, optim.g_schedule, state.step)
    g_updates, g_opt_state = state.g_tx.update(g_grads, g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    if optim.g_ema_decay > 0:
      g_ema = ema_update(g_ema, {"params": g_params, "batch_stats": g_batch_stats},
                         ema_decay(optim.g_ema_decay,
                                   jnp.maximum(state.step - optim.g_first_update_step, 0)))
    metrics.update(g_loss=g_loss, g_grad_norm=divergence.grad_norm(g_grads), **g_aux)
  else:  # D warm-up: G is frozen, its running statistics included; report how it reconstructs.
    g_batch_stats = state.g_batch_stats
    recon = loss.reconstruction(fake_ab, real_ab, huber_delta=loss.huber_delta)
    metrics.update(g_recon=recon, g_recon_weighted=loss.reconstruction_weight * recon)

  new_state = state.replace(
      step=state.step + 1,
      g_params=g_params, g_batch_stats=g_batch_stats, g_opt_state=g_opt_state, g_ema=g_ema,
      d_params=d_params, d_opt_state=d_opt_state)
  metrics["ab_l1_lab"] = jnp.mean(jnp.abs(color.unscale_ab(fake_ab) - color.unscale_ab(real_ab)))
  # The finite flag (every loss term and gradient norm) is computed on device every step and read by
  # the loop only where it syncs anyway. "skip" selects the old state on device (the step still
  # advances); "stop" does not pay for that select: the loop stops before the broken state is saved.
  finite = divergence.all_finite({k: v for k, v in metrics.items() if k != "nonfinite"})
  if skip_nonfinite:
    new_state = divergence.keep_if_finite(finite, new_state, state.replace(step=new_state.step))
  metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
  step_metrics = TrainMetrics.single_from_model_output(**metrics, finite=finite,
                                                      step=new_state.step)
  step_metrics = divergence.exclude_from_averages(step_metrics, finite, keep=("nonfinite",))
  return new_state, step_metrics


def init_train_state(config: ml_collections.ConfigDict, generator: nn.Module,
                     discriminator: nn.Module, mesh: jax.sharding.Mesh) -> GanState:
  """A fresh GanState from config.seed, replicated over the mesh."""
  init = jax.jit(functools.partial(create_train_state, config, generator, discriminator),
                 out_shardings=parallel.replicated(mesh))
  return init(jax.random.key(config.seed))


def make_train_step(config: ml_collections.ConfigDict, generator: nn.Module,
                    discriminator: nn.Module, mesh: jax.sharding.Mesh, *, train_g: bool = True):
  """train_step jitted for the mesh: state replicated (and donated), batch split on the data axis.

  train_g=False gives the D warm-up step (config.d_warmup_steps): D learns, G stays frozen.
  """
  return jax.jit(
      functools.partial(train_step, generator=generator, discriminator=discriminator,
                        loss=create_loss_spec(config), optim=create_optim_spec(config),
                        hints=hints_lib.create_spec(config), train_g=train_g,
                        skip_nonfinite=config.nan_policy == "skip"),
      in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
      out_shardings=parallel.replicated(mesh), donate_argnums=0)


def inference_variables(state: GanState):
  """(params, batch_stats) of the generator to show and evaluate: the EMA when it is kept."""
  if state.g_ema:
    return state.g_ema["params"], state.g_ema["batch_stats"]
  return state.g_params, state.g_batch_stats


def learning_rates(config: ml_collections.ConfigDict, step: int) -> dict[str, float]:
  """The learning rates the scheduled update of train step `step` (1-based, as the loop counts) used."""
  g_schedule, d_schedule = create_schedules(config)
  return {"g_learning_rate": float(g_schedule(step - 1)),
          "d_learning_rate": float(d_schedule(step - 1))}


def generate_ab(generator: nn.Module, g_params, g_batch_stats, l: jax.Array) -> jax.Array:
  """Inference: BatchNorm running statistics, no dropout. l: [B, H, W, 1] -> ab: [B, H, W, 2]."""
  return generator.apply({"params": g_params, "batch_stats": g_batch_stats}, l, train=False)


def colorize_batch(generator: nn.Module, g_params, g_batch_stats, rgb_uint8: jax.Array):
  """uint8 RGB [B, H, W, 3] -> (gray, generated, real) float RGB in [0, 1], each [B, H, W, 3]."""
  l, real_ab = color.rgb_uint8_to_model_lab(rgb_uint8)
  fake_ab = generate_ab(generator, g_params, g_batch_stats, l)
  gray = color.model_lab_to_rgb(l, jnp.zeros_like(real_ab))
  return gray, color.model_lab_to_rgb(l, fake_ab), color.model_lab_to_rgb(l, real_ab)


def sample_grid(gray: np.ndarray, generated: np.ndarray, real: np.ndarray) -> np.ndarray:
  """One row per photo: gray | generated | real, with a 2-px white gutter. Returns uint8 [H, W, 3]."""
  rows = []
  for images in zip(gray, generated, real):
    parts = []
    for image in images:
      parts += [image, np.ones((image.shape[0], 2, 3), image.dtype)]
    rows += [np.concatenate(parts[:-1], axis=1)]
    rows += [np.ones((2, rows[-1].shape[1], 3), rows[-1].dtype)]
  grid = np.concatenate(rows[:-1], axis=0)
  return np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)


def write_samples(workdir: str, step: int, grid: np.ndarray, writer) -> str:
  path = os.path.join(workdir, "samples", f"step_{step:07d}.png")
  with fileio.atomic_path(path) as tmp:
    Image.fromarray(grid).save(tmp, format="PNG")
  writer.write_images(step, {"samples": grid[None]})
  return path


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
  kept = (f"the last good checkpoint is {manager.directory}/{latest}" if latest is not None
          else "no checkpoint was saved yet")
  raise divergence.Diverged(f"{message}; stopped without saving this state, {kept} (lower the "
                            "learning rates, or --config.nan_policy=skip to skip such updates)")


def checkpoint_ranking(scalars: dict[str, float] | None,
                       eval_result: dict[str, Any] | None) -> dict[str, float] | None:
  """What a checkpoint is ranked by (best_checkpoint_metric): the training scalars of the log
  interval that ends at it, and the model's metrics ("eval/fid", ...) of the evaluation at its step."""
  ranking = dict(scalars or {})
  if eval_result is not None:
    ranking.update(evaluate.ranking_metrics(eval_result))
  return ranking or None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       source: input_pipeline.Source | None = None) -> GanState:
  """Trains to config.total_steps, resuming from the latest checkpoint in workdir if there is one.

  Writes into workdir: config.json, reproducibility.json, checkpoints/<step>/, TensorBoard events
  (the workdir itself), samples/step_<N>.png grids (gray | generated | real) and, every
  config.eval_every_steps and at the end, eval/step_<N>.json (colorgan.evaluation.evaluator: the model and the
  gray baseline on the eval split).

  Raises:
    configuration.ConfigError: the workdir's checkpoint was trained with a different config.
    preemption.Preempted: SIGTERM / SIGINT arrived; a checkpoint of the current step was saved.
    divergence.Diverged: a non-finite loss or gradient under nan_policy="stop" (nothing saved).
    checkpointing.RestoreError: the latest checkpoint does not fit this config or is damaged.
  """
  if (config.best_checkpoint_metric and config.best_checkpoint_metric not in METRIC_NAMES
      and not config.best_checkpoint_metric.startswith(configuration.EVAL_PREFIX)):
    raise configuration.ConfigError(
        f"config.best_checkpoint_metric={config.best_checkpoint_metric!r} is not a training "
        f"metric: choose one of {', '.join(METRIC_NAMES)}, or an evaluation metric (eval/fid, ...)")
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  mesh = parallel.create_mesh(config)
  parallel.check_batch_size(config.batch_size, mesh)
  generator = models.create_generator(config)
  discriminator = models.create_discriminator(config)
  source = source or input_pipeline.create_source(config)  # benchmarks pass their own

  with (jax.set_mesh(mesh), preemption.StopRequest() as stop,
        heartbeat_lib.Heartbeat(total_steps=config.total_steps) as heartbeat):
    manager = checkpointing.create_manager(workdir, config)
    writer, latest, stopped_at = None, None, None
    try:
      checkpointing.check_config_change(manager, config)  # before anything else in workdir changes
      heartbeat.set_activity("initializing the networks")
      state = init_train_state(config, generator, discriminator, mesh)
      heartbeat.set_activity("restoring the latest checkpoint")
      restored = checkpointing.restore_latest(manager, state)
      data_position = None
      if restored is not None:
        state = restored
        data_position = checkpointing.restore_data_position(manager, int(state.step), config)
        logging.info("Resumed from %s at step %d", manager.directory, int(state.step))
      else:
        state = warm_start.apply(config, state, mesh)
      start_step = int(state.step)
      writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
      if is_chief:
        fileio.write_text(os.path.join(workdir, "config.json"),
                          config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
        reproducibility.write_record(workdir, config, start_step=start_step)
      if start_step == 0:
        writer.write_hparams(configuration.flatten(config))
      state, stopped_at = _train_loop(
          config, workdir, state, start_step, data_position, source=source, generator=generator,
          discriminator=discriminator, mesh=mesh, manager=manager, writer=writer, stop=stop,
          heartbeat=heartbeat)
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
    raise preemption.Preempted(f"stopped by {stop.signal_name} at step {stopped_at}: saved "
                               f"{manager.directory}/{latest}; rerun the same command to resume")
  return state


class _LoopEnd(NamedTuple):
  state: GanState
  step: int | None  # the step a stop request ended the loop at; None: it ran to total_steps


def _train_loop(config: ml_collections.ConfigDict, workdir: str, state: GanState, start_step: int,
                data_position: checkpointing.DataPosition | None, *, source: input_pipeline.Source,
                generator: nn.Module, discriminator: nn.Module, mesh: jax.sharding.Mesh,
                manager, writer, stop: preemption.StopRequest,
                heartbeat: heartbeat_lib.Heartbeat) -> _LoopEnd:
  """Steps start_step + 1 .. total_steps: logs, samples, evaluations and checkpoints on schedule."""
  is_chief = jax.process_index() == 0
  heartbeat.set_activity("compiling the train step")
  step_fn = make_train_step(config, generator, discriminator, mesh)
  d_warmup_fn = (make_train_step(config, generator, discriminator, mesh, train_g=False)
                 if config.d_warmup_steps > start_step else None)
  # Replicated in and out: every process computes the grid (a collective), the chief writes it.
  colorize_fn = jax.jit(functools.partial(colorize_batch, generator),
                        out_shardings=parallel.replicated(mesh))
  sample_images = parallel.replicate(mesh, input_pipeline.load_eval_images(
      config, source.eval, config.num_samples))
  evaluator = (evaluate.Evaluator(config, generator, mesh, source.eval)
               if config.eval_every_steps else None)
  # One program per merge and per read, not one per metric and operation: eager operations on
  # global arrays are where a 2-process CPU run deadlocked (see evaluate.accumulate_step).
  merge_metrics = jax.jit(lambda total, new: total.merge(new), donate_argnums=0,
                          out_shardings=parallel.replicated(mesh))
  compute_metrics = jax.jit(lambda metrics: metrics.compute(),
                            out_shardings=parallel.replicated(mesh))

  # The stream continues where the checkpoint left it: examples, not steps, in case the batch
  # size changed (allow_config_change).
  data_start = (start_step if data_position is None
                else checkpointing.data_start_batch(data_position, config.batch_size))
  rows = parallel.process_batch_rows(mesh, config.batch_size)
  train_iter = iter(input_pipeline.create_train_dataset(
      config, source.train, rows=rows, start_step=data_start).as_numpy_iterator())

  # clu writes steps_per_sec to TensorBoard; the loop's own rate is for its log line only.
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=config.total_steps, writer=writer, every_steps=config.log_every_steps)
  logging.info("Training %d -> %d steps on %d device(s), %d process(es); global batch %d",
               start_step, config.total_steps, jax.device_count(), jax.process_count(),
               config.batch_size)
  interval_metrics, interval_start, interval_start_step = None, time.time(), start_step
  last_scalars = None
  for step in range(start_step + 1, config.total_steps + 1):
    heartbeat.step = step
    batch = parallel.global_batch(mesh, next(train_iter))
    train_fn = d_warmup_fn if step <= config.d_warmup_steps else step_fn
    state, step_metrics = train_fn(state, batch)
    if step == start_step + 1:
      jax.block_until_ready(step_metrics)  # once: the first step's time is mostly compilation
      logging.info("step %d done in %.1f s (compiling the train step included)", step,
                   time.time() - interval_start)
      heartbeat.set_activity("training")
    interval_metrics = (step_metrics if interval_metrics is None
                        else merge_metrics(interval_metrics, step_metrics))
    report_progress(step)
    stopping = stop.requested(step)
    last = stopping or step == config.total_steps
    if last:
      # No batch is needed any more. The pipeline's destructor waits for the images its threads
      # are decoding ahead (seconds on a busy machine): drop it now, while the device still runs
      # this step, and say so when it is slow.
      closing = time.time()
      with heartbeat.activity("stopping the input pipeline (its threads finish the images in "
                              "flight)"):
        train_iter = None
      if time.time() - closing > 2:
        logging.info("The input pipeline took %.1f s to stop", time.time() - closing)
    saving = last or manager.should_save(step)
    logging_now = step % config.log_every_steps == 0 or step == config.total_steps
    sampling = len(sample_images) and (step % config.sample_every_steps == 0
                                       or step == config.total_steps)
    if saving or logging_now or sampling:
      _check_finite(interval_metrics, config, manager, step)

    if logging_now:
      scalars = {k: float(v) for k, v in compute_metrics(interval_metrics).items()}
      scalars.update(learning_rates(config, step))
      writer.write_scalars(step, scalars)
      steps_per_sec = (step - interval_start_step) / (time.time() - interval_start)
      eta_min = (config.total_steps - step) / steps_per_sec / 60
      logging.info("step %d/%d %s | %.2f steps/s, ETA %.1f min", step, config.total_steps,
                   _format_metrics(scalars), steps_per_sec, eta_min)
      interval_metrics, interval_start, interval_start_step = None, time.time(), step
      last_scalars = scalars

    if sampling:
      with heartbeat.activity("drawing the sample grid"):
        grid = sample_grid(*jax.device_get(colorize_fn(*inference_variables(state),
                                                       sample_images)))
      if is_chief:
        path = write_samples(workdir, step, grid, writer)
        logging.info("Wrote samples %s", path)

    eval_result = None
    if evaluator and (step % config.eval_every_steps == 0 or step == config.total_steps):
      with heartbeat.activity(f"evaluating on {evaluator.num_images} photos"):
        eval_result = evaluate.evaluate_and_record(
            evaluator, dict(zip(("params", "batch_stats"), inference_variables(state))), step,
            workdir, writer)

    if saving:
      examples = (data_start + step - start_step) * config.batch_size
      checkpointing.save(
          manager, step, state, config, force=True,
          data=checkpointing.DataPosition(examples, config.batch_size, config.seed),
          metrics=checkpoint_ranking(last_scalars if logging_now else None, eval_result))
    if stopping:
      return _LoopEnd(state, step)
  return _LoopEnd(state, None)
