"""A thin layer over orbax's CheckpointManager: the whole GanState plus the config, atomically."""

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from colorgan import models
from colorgan.state import GanState


def create_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """Checkpoints under workdir/checkpoints: every checkpoint_every_steps, the latest keep_checkpoints."""
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=policies.AnySavePolicy([
          policies.FixedIntervalPolicy(config.checkpoint_every_steps),
          policies.PreemptionCheckpointingPolicy(),
      ]),
      preservation_policy=policies.LatestN(config.keep_checkpoints),
      create=True)
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      item_names=("state", "config"), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: GanState,
         config: ml_collections.ConfigDict, *, force: bool = False) -> bool:
  """Saves (asynchronously) when the policies ask for this step, or always with force.

  `step` is the host's count (== state.step): reading state.step would wait for the device.
  """
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config.to_dict())), force=force)


def restore_latest(manager: ocp.CheckpointManager, state: GanState) -> GanState | None:
  """The latest committed checkpoint restored into `state`'s structure and shardings, or None."""
  step = manager.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  return restored.state


class InferenceModel(NamedTuple):
  """What inference needs from a run: its config, the checkpoint's step, the generator's variables."""
  config: ml_collections.ConfigDict
  step: int
  g_variables: dict  # {"params": ..., "batch_stats": ...}


def restore_for_inference(workdir: str, step: int | None = None,
                          sharding: jax.sharding.Sharding | None = None) -> InferenceModel:
  """Reads the generator of a run's checkpoint, without building optimizers or the discriminator.

  The saved config rebuilds the generator's abstract shapes, and only those leaves are read, placed
  with `sharding`, whatever the device count the run was saved from. When the run kept an EMA of the
  generator (config.g_ema_decay > 0), the EMA's variables are the ones returned.

  Args:
    workdir: the run's --workdir.
    step: a checkpoint step; None: the latest.
    sharding: where to put the arrays (default: the first local device).

  Raises:
    FileNotFoundError: no checkpoint (or not that step) in workdir, with the steps there are.
  """
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{workdir} holds no checkpoints/ directory: train there first "
                            "(--mode=train) or point --workdir at a run")
  manager = ocp.CheckpointManager(directory, item_names=("state", "config"))
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"{directory} holds no committed checkpoint")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise FileNotFoundError(f"{directory} has no checkpoint at step {step}: it has steps "
                            f"{', '.join(map(str, sorted(steps)))}")
  config = ml_collections.ConfigDict(
      manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config)
  generator = models.create_generator(config)
  size = config.image_size
  abstract = jax.eval_shape(functools.partial(generator.init, train=False), jax.random.key(0),
                            jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32))
  g_variables = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
  use_ema = config.get("g_ema_decay", 0.0) > 0
  item = ({"g_ema": g_variables} if use_ema else
          {"g_params": g_variables["params"], "g_batch_stats": g_variables["batch_stats"]})
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  restore_args = jax.tree.map(
      lambda x: ocp.ArrayRestoreArgs(sharding=sharding, global_shape=x.shape, dtype=x.dtype), item)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=True))).state
  manager.close()
  if use_ema:
    return InferenceModel(config, step, restored["g_ema"])
  return InferenceModel(config, step, {"params": restored["g_params"],
                                       "batch_stats": restored["g_batch_stats"]})
