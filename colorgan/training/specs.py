"""What a config asks of the train step: the losses it names, the optimizers and their schedules.

These are static in the jitted step (colorgan.training.step): looked up once per compilation.
"""

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from colorgan.training import losses
from colorgan.training import phases as phases_lib
from colorgan.training import schedules


class LossSpec(NamedTuple):
  """The losses named in config.loss, looked up once; static in the jitted step."""

  gan: losses.GanLoss | None  # None: loss.gan="none", reconstruction only and no D step
  gan_weight: float
  reconstruction: Callable[..., jax.Array]
  reconstruction_weight: float
  huber_delta: float
  penalty: Callable[..., jax.Array]
  penalty_weight: float
  colorfulness: Callable[..., jax.Array] | None = None  # None: no colourfulness term
  colorfulness_weight: float = 0.0
  colorfulness_margin: float = 0.0
  feature_matching_weight: float = 0.0  # 0: D's features are not matched
  # config.phases with a GAN ramp: the adversarial terms' weight is times phases.gan_ramp(step).
  ramp: phases_lib.Phases | None = None
  classification_weight: float | None = None  # a classification head's cross-entropy; None: none


def create_loss_spec(config: ml_collections.ConfigDict, *, adversarial: bool = True) -> LossSpec:
  """config.loss's names looked up in the registries of colorgan.training.losses; adversarial=False:
  the reconstruction side alone (the reconstruction phase of config.phases)."""
  cfg = config.loss
  adversarial = adversarial and cfg.gan != "none"
  phases = phases_lib.from_config(config)
  return LossSpec(
    gan=losses.GAN_LOSSES[cfg.gan] if adversarial else None,
    gan_weight=cfg.gan_weight,
    reconstruction=losses.RECONSTRUCTION_LOSSES[cfg.reconstruction],
    reconstruction_weight=cfg.l1_weight,
    huber_delta=cfg.huber_delta,
    penalty=losses.PENALTIES[
      losses.resolve_penalty(cfg.gan, cfg.penalty) if adversarial else "none"
    ],
    penalty_weight=cfg.penalty_weight,
    colorfulness=losses.COLORFULNESS_LOSSES.get(cfg.colorfulness),
    colorfulness_weight=cfg.colorfulness_weight,
    colorfulness_margin=cfg.colorfulness_margin,
    feature_matching_weight=cfg.feature_matching_weight if adversarial else 0.0,
    ramp=phases if adversarial and phases.ramp_steps else None,
    classification_weight=(
      cfg.classification_weight if config.model.ab_head == "classification" else None
    ),
  )


class OptimSpec(NamedTuple):
  """How the step optimizes (config.optim, config.g_ema_decay); static in the jitted step."""

  g_schedule: schedules.Schedule
  d_schedule: schedules.Schedule
  d_steps: int  # D updates per G update, on the same batch and generated ab
  g_ema_decay: float  # > 0: state.g_ema follows G's variables
  g_first_update_step: int  # the train step of G's first update (after a D warm-up)


def create_schedules(config: ml_collections.ConfigDict):
  """(g_schedule, d_schedule): each network's learning rate as a function of the train step."""
  cfg = config.optim
  make = functools.partial(
    schedules.create_schedule,
    total_steps=config.total_steps,
    warmup_steps=cfg.warmup_steps,
    decay_steps=cfg.decay_steps,
  )
  return make(cfg.g_schedule, cfg.g_learning_rate), make(cfg.d_schedule, cfg.d_learning_rate)


def create_optim_spec(config: ml_collections.ConfigDict) -> OptimSpec:
  """The schedules, D steps and EMA of a config, for train_step."""
  g_schedule, d_schedule = create_schedules(config)
  phases = phases_lib.from_config(config)
  return OptimSpec(
    g_schedule=g_schedule,
    d_schedule=d_schedule,
    d_steps=config.optim.d_steps,
    g_ema_decay=config.g_ema_decay,
    g_first_update_step=0 if phases.reconstruction_end else phases.d_warmup_end,
  )


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


def with_learning_rate(opt_state, schedule: schedules.Schedule, step: jax.Array):
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


def learning_rates(config: ml_collections.ConfigDict, step: int) -> dict[str, float]:
  """The learning rates the scheduled update of train step `step` (1-based, as the loop counts) used."""
  g_schedule, d_schedule = create_schedules(config)
  return {
    "g_learning_rate": float(g_schedule(step - 1)),
    "d_learning_rate": float(d_schedule(step - 1)),
  }
