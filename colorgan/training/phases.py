"""Phases inside one run (config.phases, README "Recipes"): a reconstruction-only phase, a D warm-up,
then the GAN with its weight ramped up, with boundaries as fractions of total_steps, so that one
command and one workdir train a pretrain-then-GAN recipe and --config.total_steps scales it.

Steps are counted as the loop counts them, 1 to total_steps:
  1 .. reconstruction_end                  G alone, reconstruction loss only (no D step)
  reconstruction_end + 1 .. d_warmup_end   D alone, G frozen (as config.d_warmup_steps)
  d_warmup_end + 1 .. total_steps          both; the adversarial terms' weight ramps linearly from
                                           1/ramp_steps of loss.gan_weight to all of it over the
                                           first ramp_steps GAN steps
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from colorgan import errors


class Phases(NamedTuple):
  reconstruction_end: int
  d_warmup_end: int
  ramp_steps: int  # 0: the full adversarial weight from the first GAN step

  def kind(self, step: int) -> str:
    """ "reconstruction", "d_warmup" or "gan": the phase of (1-based) train step `step`."""
    if step <= self.reconstruction_end:
      return "reconstruction"
    return "d_warmup" if step <= self.d_warmup_end else "gan"

  def gan_ramp(self, step: jax.Array) -> jax.Array:
    """The adversarial weight's factor in the update of 0-based state.step `step` (traced)."""
    done = jnp.asarray(step, jnp.float32) - self.d_warmup_end + 1.0
    return jnp.clip(done / self.ramp_steps, 0.0, 1.0)


def from_config(config: ml_collections.ConfigDict) -> Phases:
  """The config's phases: config.phases.* as fractions of total_steps (rounded to whole steps), or
  the older config.d_warmup_steps (a D warm-up of that many steps, no other phase)."""
  total = config.total_steps
  reconstruction = round(config.phases.reconstruction * total)
  d_warmup = round(config.phases.d_warmup * total) or config.d_warmup_steps
  return Phases(
    reconstruction_end=reconstruction,
    d_warmup_end=reconstruction + d_warmup,
    ramp_steps=round(config.phases.gan_ramp * total),
  )


def describe(phases: Phases, total_steps: int) -> str:
  """The phases in words, for the log."""
  parts = []
  if phases.reconstruction_end:
    parts.append(f"reconstruction only: steps 1-{phases.reconstruction_end}")
  if phases.d_warmup_end > phases.reconstruction_end:
    parts.append(f"D warm-up: steps {phases.reconstruction_end + 1}-{phases.d_warmup_end}")
  gan = f"GAN: steps {phases.d_warmup_end + 1}-{total_steps}"
  if phases.ramp_steps:
    gan += f" (its weight ramped up over {phases.ramp_steps} steps)"
  return "; ".join(parts + [gan])


def check(config: ml_collections.ConfigDict) -> None:
  """Raises errors.ConfigError for config.phases.* (configuration.validate calls it): fractions of
  the run that leave room for the GAN, each with what it needs."""
  cfg = config.phases
  for key in ("reconstruction", "d_warmup", "gan_ramp"):
    if not isinstance(cfg[key], (int, float)) or not 0 <= cfg[key] < 1:
      raise errors.ConfigError(f"config.phases.{key}={cfg[key]!r} must be in [0, 1)")
  if cfg.reconstruction + cfg.d_warmup >= 1:
    raise errors.ConfigError(
      f"config.phases.reconstruction={cfg.reconstruction} + phases.d_warmup={cfg.d_warmup} leave "
      "no step for the GAN: keep their sum under 1"
    )
  if cfg.d_warmup and config.d_warmup_steps:
    raise errors.ConfigError(
      "config.phases.d_warmup and config.d_warmup_steps both set a D warm-up: clear one"
    )
  if cfg.interpolate and not (cfg.reconstruction and config.loss.gan != "none"):
    raise errors.ConfigError(
      "config.phases.interpolate interpolates between the reconstruction phase's generator and "
      "the GAN's: it needs config.phases.reconstruction > 0 and a config.loss.gan"
    )
  if (cfg.d_warmup or cfg.gan_ramp) and config.loss.gan == "none":
    raise errors.ConfigError(
      "config.phases.d_warmup / gan_ramp need a discriminator: config.loss.gan is 'none'"
    )
