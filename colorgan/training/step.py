"""The train step: the losses and optimizers a config names, the state, and one joint D + G update.

train_step reads as its three parts: the discriminator's update (_d_update), the generator's
through the updated discriminator (_g_update), and the non-finite guard (_guard_nonfinite). The
generator runs forward once; its output feeds both updates, and G's gradient is pulled back through
that same forward pass (jax.vjp).
"""

import functools
from typing import Any, Callable

from clu import metrics as clu_metrics
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from colorgan import color
from colorgan import hints as hints_lib
from colorgan import parallel
from colorgan.models import ab_bins
from colorgan.training import divergence
from colorgan.training import losses
from colorgan.training import specs
from colorgan.training.state import GanState

# Every train_step returns these scalars (zeros where a term is off), averaged over each log interval.
METRIC_NAMES = (
  "d_loss",
  "d_adv",
  "d_penalty",
  "d_real_logit",
  "d_fake_logit",
  "g_loss",
  "g_adv",
  "g_adv_weighted",
  "g_recon",
  "g_recon_weighted",
  "g_colorfulness",  # config.loss.colorfulness's term, before its weight
  "g_feature_matching",  # config.loss.feature_matching_weight's term, before its weight
  "g_classification",  # a classification head's rebalanced cross-entropy, before its weight
  "ab_l1_lab",
  "nonfinite",  # the fraction of steps with a non-finite loss or gradient (skipped or fatal)
)


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  """Averages of METRIC_NAMES over a log interval, and the interval's first non-finite step."""

  __annotations__ = {
    **{name: clu_metrics.Average.from_output(name) for name in METRIC_NAMES},
    "first_nonfinite": divergence.FirstNonFinite,
  }

  def compute(self) -> dict[str, jax.Array]:
    """The averages; first_nonfinite is read by the loop's NaN check (divergence.first_nonfinite)."""
    return {k: v for k, v in super().compute().items() if k in METRIC_NAMES}


def create_train_state(
  config: ml_collections.ConfigDict, generator: nn.Module, discriminator: nn.Module, rng: jax.Array
) -> GanState:
  """Initializes both networks and optimizers (pure: jit it with out_shardings to place the state)."""
  g_rng, d_rng, state_rng = jax.random.split(rng, 3)
  size = config.image_size
  l = jnp.zeros((1, size, size, 1), jnp.float32)
  ab = jnp.zeros((1, size, size, 2), jnp.float32)
  g_vars = generator.init(g_rng, l, train=False)
  d_vars = discriminator.init(d_rng, l, ab, train=False)
  g_tx, d_tx = specs.create_optimizers(config)
  g_batch_stats = g_vars.get("batch_stats", {})
  return GanState(
    step=jnp.zeros((), jnp.int32),
    rng=state_rng,
    g_params=g_vars["params"],
    g_batch_stats=g_batch_stats,
    g_opt_state=g_tx.init(g_vars["params"]),
    d_params=d_vars["params"],
    d_opt_state=d_tx.init(d_vars["params"]),
    g_tx=g_tx,
    d_tx=d_tx,
    g_ema=(
      {"params": g_vars["params"], "batch_stats": g_batch_stats} if config.g_ema_decay > 0 else {}
    ),
    d_stats=d_vars.get("batch_stats", {}) if config.model.d_spectral_norm else {},
    ab_class_weights=(
      jnp.ones((ab_bins.num_bins(),), jnp.float32)  # the loop sets the prior's (class_prior.py)
      if config.model.ab_head == "classification"
      else {}
    ),
    g_anchor=(
      {"params": g_vars["params"], "batch_stats": g_batch_stats}
      if config.phases.interpolate
      else {}
    ),
  )


def _d_update(
  state: GanState,
  discriminate,
  fake_ab,
  real_ab,
  rng: jax.Array,
  *,
  loss: specs.LossSpec,
  optim: specs.OptimSpec,
):
  """D's optim.d_steps updates on (real, generated), fake and real passing separately (BatchNorm
  sees each batch on its own), as in pix2pix. Returns (d_params, d_opt_state, d_stats, metrics):
  d_stats, a spectrally normalized D's vectors, one power iteration further (on the real pass)."""
  fake_ab = jax.lax.stop_gradient(fake_ab)

  def d_loss_fn(d_params, rng):
    fake_logits = discriminate(d_params, fake_ab)
    real_logits = discriminate(d_params, real_ab)
    adv = loss.gan.discriminator(real_logits=real_logits, fake_logits=fake_logits)
    penalty = loss.penalty(
      lambda ab: discriminate(d_params, ab), real_ab=real_ab, fake_ab=fake_ab, rng=rng
    )
    aux = dict(
      d_adv=adv,
      d_penalty=penalty,
      d_real_logit=jnp.mean(real_logits),
      d_fake_logit=jnp.mean(fake_logits),
    )
    return adv + loss.penalty_weight * penalty, aux

  def one_update(d_params, opt_state, rng):
    (d_loss, aux), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params, rng)
    updates, opt_state = state.d_tx.update(grads, opt_state, d_params)
    return (
      optax.apply_updates(d_params, updates),
      opt_state,
      dict(d_loss=d_loss, d_grad_norm=divergence.grad_norm(grads), **aux),
    )

  d_opt_state = specs.with_learning_rate(state.d_opt_state, optim.d_schedule, state.step)
  carry = one_update(state.d_params, d_opt_state, rng)
  if optim.d_steps > 1:  # a loop, not an unrolled body: compile time stays that of one D step
    carry = jax.lax.fori_loop(
      1, optim.d_steps, lambda i, carry: one_update(*carry[:2], jax.random.fold_in(rng, i)), carry
    )
  d_params, d_opt_state, metrics = carry
  d_stats = state.d_stats
  if d_stats:
    d_stats = discriminate(d_params, real_ab, updated_stats=True)[1]
  return d_params, d_opt_state, d_stats, metrics


def _g_objective(g_out, *, l, real_ab, d_params, discriminate, step, class_weights, loss):
  """G's loss on its output fake_ab, and its terms: the reconstruction, then the colourfulness term,
  the adversarial term and D's feature matching where the config has them (ramped up in the first
  GAN steps of config.phases). g_out: G's output, ab or a classification head's logits."""
  fake_ab = g_out if loss.classification_weight is None else ab_bins.decode(g_out)
  recon = loss.reconstruction(fake_ab, real_ab, huber_delta=loss.huber_delta)
  aux = dict(g_recon=recon, g_recon_weighted=loss.reconstruction_weight * recon)
  total = aux["g_recon_weighted"]
  if loss.classification_weight is not None:
    aux["g_classification"] = losses.classification(g_out, real_ab, class_weights)
    total = total + loss.classification_weight * aux["g_classification"]
  if loss.colorfulness is not None:
    true_rgb = color.model_lab_to_rgb(l, real_ab)
    aux["g_colorfulness"] = loss.colorfulness(
      color.model_lab_to_rgb(l, fake_ab), true_rgb, margin=loss.colorfulness_margin
    )
    total = total + loss.colorfulness_weight * aux["g_colorfulness"]
  if loss.gan is None:
    return total, aux
  matching = loss.feature_matching_weight > 0
  fake_logits = discriminate(d_params, fake_ab, features=matching)
  if matching:
    fake_logits, fake_features = fake_logits
    real_features = discriminate(d_params, real_ab, features=True)[1]
    aux["g_feature_matching"] = losses.feature_matching(real_features, fake_features)
  ramp = 1.0 if loss.ramp is None else loss.ramp.gan_ramp(step)
  if matching:
    total = total + ramp * loss.feature_matching_weight * aux["g_feature_matching"]
  adv = loss.gan.generator(fake_logits=fake_logits)
  aux.update(
    g_adv=adv,
    g_adv_weighted=(loss.gan_weight * adv if loss.ramp is None else ramp * loss.gan_weight * adv),
  )
  return aux["g_adv_weighted"] + total, aux


def _g_update(
  state: GanState,
  discriminate,
  d_params,
  l,
  g_out,
  real_ab,
  pull_back_to_g,
  g_batch_stats,
  *,
  loss: specs.LossSpec,
  optim: specs.OptimSpec,
):
  """G's update through the updated discriminator, and its EMA.

  Returns:
    (g_params, g_opt_state, g_ema, metrics); g_batch_stats are those of the forward pass.
  """

  g_loss_fn = functools.partial(
    _g_objective,
    l=l,
    real_ab=real_ab,
    d_params=d_params,
    discriminate=discriminate,
    step=state.step,
    class_weights=state.ab_class_weights,
    loss=loss,
  )
  (g_loss, g_aux), d_g_out = jax.value_and_grad(g_loss_fn, has_aux=True)(g_out)
  (g_grads,) = pull_back_to_g(d_g_out)
  g_opt_state = specs.with_learning_rate(state.g_opt_state, optim.g_schedule, state.step)
  g_updates, g_opt_state = state.g_tx.update(g_grads, g_opt_state, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)
  g_ema = state.g_ema
  if optim.g_ema_decay > 0:  # ema <- decay * ema + (1 - decay) * new, leaf by leaf
    decay = specs.ema_decay(
      optim.g_ema_decay, jnp.maximum(state.step - optim.g_first_update_step, 0)
    )
    g_ema = optax.incremental_update(
      {"params": g_params, "batch_stats": g_batch_stats}, g_ema, step_size=1.0 - decay
    )
  metrics = dict(g_loss=g_loss, g_grad_norm=divergence.grad_norm(g_grads), **g_aux)
  return g_params, g_opt_state, g_ema, metrics


def _guard_nonfinite(
  state: GanState, new_state: GanState, metrics: dict[str, jax.Array], *, skip_nonfinite: bool
) -> tuple[GanState, TrainMetrics]:
  """The finite flag (every loss term and gradient norm), computed on device every step and read by
  the loop only where it syncs anyway. "skip" selects the old state on device (the step still
  advances); "stop" does not pay for that select: the loop stops before the broken state is saved."""
  finite = divergence.all_finite({k: v for k, v in metrics.items() if k != "nonfinite"})
  if skip_nonfinite:
    new_state = divergence.keep_if_finite(finite, new_state, state.replace(step=new_state.step))
  metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
  step_metrics = TrainMetrics.single_from_model_output(
    **metrics, finite=finite, step=new_state.step
  )
  return new_state, divergence.exclude_from_averages(step_metrics, finite, keep=("nonfinite",))


def _forward_passes(
  state: GanState,
  generator: nn.Module,
  discriminator: nn.Module,
  g_inputs: tuple[jax.Array, ...],
  *,
  dropout_rng: jax.Array,
) -> tuple[Callable, Callable]:
  """The networks in training mode on g_inputs (the lightness, then any hints): generate(g_params)
  -> (fake_ab, G's new batch_stats) and discriminate(d_params, ab) -> D's logits."""

  def generate(g_params):
    fake_ab, updates = generator.apply(
      {"params": g_params, "batch_stats": state.g_batch_stats},
      *g_inputs,
      train=True,
      rngs={"dropout": dropout_rng},
      mutable=["batch_stats"],
    )
    return fake_ab, updates["batch_stats"]

  def discriminate(d_params, ab, features=False, updated_stats=False):
    # D only ever runs in training mode, on the statistics of the batch it sees (as pix2pix): its
    # BatchNorm running averages would never be read, so they are not kept. A spectrally normalized
    # D's power-iteration vectors are (state.d_stats): updated_stats also returns their update.
    l, *hint_maps = g_inputs
    stats = {"batch_stats": state.d_stats} if state.d_stats else {}
    out, updates = discriminator.apply(
      {"params": d_params, **stats},
      l,
      ab,
      *hint_maps,
      train=True,
      return_features=features,
      mutable=["batch_stats"],
    )
    return (out, updates["batch_stats"]) if updated_stats else out

  return generate, discriminate


def train_step(
  state: GanState,
  batch: dict[str, jax.Array],
  *,
  generator: nn.Module,
  discriminator: nn.Module,
  loss: specs.LossSpec,
  optim: specs.OptimSpec,
  hints: hints_lib.HintSpec | None = None,
  train_g: bool = True,
  skip_nonfinite: bool = False,
) -> tuple[GanState, Any]:
  """One joint update: the discriminator on (real, generated), then the generator through the new D.

  Variants, all static: loss.gan None (L1 pretraining) skips D; train_g=False (D warm-up) leaves G's
  weights and statistics untouched; optim.d_steps > 1 updates D that many times on this batch.

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
  metrics = {
    name: jnp.zeros((), jnp.float32) for name in METRIC_NAMES + ("d_grad_norm", "g_grad_norm")
  }
  generate, discriminate = _forward_passes(
    state, generator, discriminator, g_inputs, dropout_rng=dropout_rng
  )
  g_out, pull_back_to_g, g_batch_stats = jax.vjp(generate, state.g_params, has_aux=True)
  fake_ab = g_out if loss.classification_weight is None else ab_bins.decode(g_out)
  d_params, d_opt_state, d_stats = state.d_params, state.d_opt_state, state.d_stats
  if loss.gan is not None:
    d_params, d_opt_state, d_stats, d_metrics = _d_update(
      state, discriminate, fake_ab, real_ab, penalty_rng, loss=loss, optim=optim
    )
    metrics.update(d_metrics)
  g_params, g_opt_state, g_ema = state.g_params, state.g_opt_state, state.g_ema
  if train_g:
    g_params, g_opt_state, g_ema, g_metrics = _g_update(
      state,
      discriminate,
      d_params,
      l,
      g_out,
      real_ab,
      pull_back_to_g,
      g_batch_stats,
      loss=loss,
      optim=optim,
    )
    metrics.update(g_metrics)
  else:  # D warm-up: G is frozen, its running statistics included; report how it reconstructs.
    g_batch_stats = state.g_batch_stats
    recon = loss.reconstruction(fake_ab, real_ab, huber_delta=loss.huber_delta)
    metrics.update(g_recon=recon, g_recon_weighted=loss.reconstruction_weight * recon)
  new_state = state.replace(
    step=state.step + 1,
    g_params=g_params,
    g_batch_stats=g_batch_stats,
    g_opt_state=g_opt_state,
    g_ema=g_ema,
    d_params=d_params,
    d_opt_state=d_opt_state,
    d_stats=d_stats,
  )
  metrics["ab_l1_lab"] = jnp.mean(jnp.abs(color.unscale_ab(fake_ab) - color.unscale_ab(real_ab)))
  return _guard_nonfinite(state, new_state, metrics, skip_nonfinite=skip_nonfinite)


def init_train_state(
  config: ml_collections.ConfigDict,
  generator: nn.Module,
  discriminator: nn.Module,
  mesh: jax.sharding.Mesh,
) -> GanState:
  """A fresh GanState from config.seed, replicated over the mesh."""
  init = jax.jit(
    functools.partial(create_train_state, config, generator, discriminator),
    out_shardings=parallel.replicated(mesh),
  )
  return init(jax.random.key(config.seed))


def make_train_step(
  config: ml_collections.ConfigDict,
  generator: nn.Module,
  discriminator: nn.Module,
  mesh: jax.sharding.Mesh,
  *,
  train_g: bool = True,
  adversarial: bool = True,
):
  """train_step jitted for the mesh: state replicated (and donated), batch split on the data axis.

  train_g=False gives the D warm-up step (config.phases, config.d_warmup_steps): D learns, G stays
  frozen; adversarial=False the reconstruction phase's: G alone, no D step.
  """
  return jax.jit(
    functools.partial(
      train_step,
      generator=generator,
      discriminator=discriminator,
      loss=specs.create_loss_spec(config, adversarial=adversarial),
      optim=specs.create_optim_spec(config),
      hints=hints_lib.create_spec(config),
      train_g=train_g,
      skip_nonfinite=config.nan_policy == "skip",
    ),
    in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
    out_shardings=parallel.replicated(mesh),
    donate_argnums=0,
  )
