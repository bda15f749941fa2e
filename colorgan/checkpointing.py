"""A thin layer over orbax's CheckpointManager: the whole GanState plus the config, atomically."""

import os

import jax
import ml_collections
import orbax.checkpoint as ocp

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
