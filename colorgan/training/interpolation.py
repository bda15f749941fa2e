"""ESRGAN's network interpolation for config.phases.interpolate (README "Recipes").

The generator's variables at the end of the reconstruction phase are kept in the state
(GanState.g_anchor, so a resumed run has them too). At the end of training WORKDIR/interpolation.npz
holds them and BatchNorm statistics for weights alpha on a grid: params (1 - alpha) * anchor +
alpha * final have statistics of their own, which neither end's running averages give, so they are
re-estimated on training batches (the mean over the batches of each batch's statistics, as the
generator computes them in training mode). alpha = 0 and 1 keep the two networks' own statistics, so
that the ends are exactly the two networks. models.vividness reads the file: v is alpha.
"""

import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from colorgan import color
from colorgan import fileio
from colorgan.models import vividness
from colorgan.training.state import GanState

ALPHAS = np.linspace(0.0, 1.0, 11)
STATS_BATCHES = 16  # training batches whose statistics are averaged at each interior alpha
MOMENTUM = 0.9  # models.layers.BatchNorm's: running = 0.9 * running + 0.1 * batch


def keep_anchor(state: GanState, variables: dict) -> GanState:
  """The state with `variables` (the generator's to show, EMA's included) kept as the anchor, copied:
  the next step donates the state's buffers."""
  return state.replace(g_anchor=jax.tree.map(jnp.copy, variables))


def _batch_statistics(generator, variables: dict, l: jax.Array, rng: jax.Array) -> dict:
  """The BatchNorm statistics of one batch, as training mode computes them: recovered from the
  running-average update, batch = (new - momentum * old) / (1 - momentum)."""
  _, updates = generator.apply(
    variables, l, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
  )
  return jax.tree.map(
    lambda new, old: (new - MOMENTUM * old) / (1.0 - MOMENTUM),
    updates["batch_stats"],
    variables["batch_stats"],
  )


_batch_statistics_jit = jax.jit(_batch_statistics, static_argnums=0)


def reestimate(generator, variables: dict, batches: list[np.ndarray], seed: int = 0) -> dict:
  """The mean over `batches` (uint8 RGB [B, S, S, 3]) of each batch's BatchNorm statistics."""
  total = None
  for i, images in enumerate(batches):
    l, _ = color.rgb_uint8_to_model_lab(images)
    batch = _batch_statistics_jit(generator, variables, l, jax.random.key(seed + i))
    total = batch if total is None else jax.tree.map(jnp.add, total, batch)
  return jax.tree.map(lambda x: np.asarray(x / len(batches)), total)


def write(generator, anchor: dict, final: dict, batches: list[np.ndarray], workdir: str) -> str:
  """WORKDIR/interpolation.npz: the anchor's variables and the statistics at each of ALPHAS."""
  anchor, final = jax.device_get(anchor), jax.device_get(final)
  flat = {f"anchor/{k}": np.asarray(v) for k, v in fileio.flatten(anchor).items()}
  for k, alpha in enumerate(ALPHAS):
    if alpha in (0.0, 1.0):
      stats = (anchor if alpha == 0.0 else final)["batch_stats"]
    else:
      params = vividness.mix(anchor["params"], final["params"], float(alpha))
      stats = reestimate(
        generator, {"params": params, "batch_stats": final["batch_stats"]}, batches
      )
    flat.update({f"stats/{k}/{key}": np.asarray(v) for key, v in fileio.flatten(stats).items()})
  flat["alphas"] = ALPHAS
  path = os.path.join(workdir, vividness.INTERPOLATION_FILE)
  if jax.process_index() == 0:
    with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
      np.savez(f, **flat)
  logging.info(
    "Weight interpolation: the reconstruction phase's generator and BatchNorm statistics at %d "
    "weights, re-estimated on %d training batches -> %s",
    len(ALPHAS),
    len(batches),
    path,
  )
  return path
