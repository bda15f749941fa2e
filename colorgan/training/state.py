"""GanState: everything that changes during training, as one pytree."""

from typing import Any

import flax.struct
import jax
import optax


class GanState(flax.struct.PyTreeNode):
  """Both networks' parameters and optimizer states, G's BatchNorm statistics, the step, the base rng.

  The per-step randomness is `jax.random.fold_in(rng, step)`: `rng` itself never changes, so a resumed
  run draws exactly what an uninterrupted one would. The optax transforms are static (not leaves): they
  are code, rebuilt from the config.

  `g_ema` is {"params": ..., "batch_stats": ...}, an exponential moving average of the generator's
  variables when config.g_ema_decay > 0 (used for samples, evaluation and colorize), {} otherwise.
  """

  step: jax.Array
  rng: jax.Array
  g_params: Any
  g_batch_stats: Any
  g_opt_state: optax.OptState
  d_params: Any  # D keeps no BatchNorm statistics: it only ever runs in training mode
  d_opt_state: optax.OptState
  g_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  g_ema: Any = flax.struct.field(default_factory=dict)
  # config.phases.interpolate: G's variables at the end of the reconstruction phase (the EMA's where
  # one is kept), for weight interpolation (training/interpolation.py); {} otherwise.
  g_anchor: Any = flax.struct.field(default_factory=dict)
  # config.model.d_spectral_norm: D's power-iteration vectors (flax.linen.SpectralNorm's u, sigma);
  # {} otherwise.
  d_stats: Any = flax.struct.field(default_factory=dict)
  # config.model.ab_head="classification": each ab bin's rebalancing weight [Q], from the training
  # photos' prior at the start of the run (training/class_prior.py); {} otherwise.
  ab_class_weights: Any = flax.struct.field(default_factory=dict)
