"""A thin layer over orbax's CheckpointManager: the whole GanState, the data position and the config.

A checkpoint `workdir/checkpoints/<step>/` holds three items:
  state   the GanState (both networks, BatchNorm statistics, optimizer states, step, rng),
  data    the position in the training stream, {"examples": ..., "batch_size": ..., "seed": ...},
  config  the run's config as JSON.
Orbax writes each checkpoint into `<step>.orbax-checkpoint-tmp-*` and renames it once complete, so a
process killed at any moment (also mid-save) leaves only committed steps behind; leftover tmp
directories are deleted when the next run creates its manager.

Evaluation and inference read checkpoints through here too, so it knows nothing of training: whether
a run may resume with a changed config, and where its data stream goes on, is training/resume.py.
"""

import math
import os
from typing import Any, NamedTuple

from absl import logging
from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

from colorgan import errors
from colorgan import models
from colorgan.models import precise_bn

# The training state as a pytree (colorgan.training.state.GanState): this module, shared by
# evaluation and inference, knows its structure only through the trees it is given.
PyTree = Any

ITEMS = ("state", "data", "config")


class DataPosition(NamedTuple):
  """Where the training stream stands after a checkpoint's step: examples consumed so far."""

  examples: int
  batch_size: int
  seed: int

  def to_json(self) -> dict[str, int]:
    return self._asdict()


def _directory(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, "checkpoints"))


def create_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """Checkpoints under workdir/checkpoints.

  Saves every checkpoint_every_steps (and at a preemption sync point of a multi-process JAX run);
  keeps the latest keep_checkpoints and, with config.best_checkpoint_metric, the best one by that
  metric. Leftover tmp directories of an interrupted save are deleted (in the background; orbax
  finishes that before the first save, and restores only ever read committed steps).
  """
  policies = ocp.checkpoint_managers
  preserve = [policies.LatestN(config.keep_checkpoints)]
  ranking = {}
  if config.best_checkpoint_metric:
    name = config.best_checkpoint_metric
    worst = math.inf if config.best_checkpoint_mode == "min" else -math.inf
    metric = lambda metrics: metrics.get(name, worst)  # noqa: E731
    preserve.append(
      policies.BestN(
        get_metric_fn=metric,
        n=1,
        reverse=config.best_checkpoint_mode == "min",  # BestN keeps the end of the sorted list
        keep_checkpoints_without_metrics=False,
      )
    )  # preemption saves: kept while among the latest
    # best_fn makes orbax write each checkpoint's metrics beside it: without them on disk a resumed
    # run's manager would not know the best checkpoint of the run before and would delete it.
    ranking = dict(best_fn=metric, best_mode=config.best_checkpoint_mode)
  options = ocp.CheckpointManagerOptions(
    save_decision_policy=policies.AnySavePolicy(
      [
        policies.FixedIntervalPolicy(config.checkpoint_every_steps),
        policies.PreemptionCheckpointingPolicy(),
      ]
    ),
    preservation_policy=policies.AnyPreservationPolicy(preserve),
    cleanup_tmp_directories=True,
    create=True,
    **ranking,
  )
  return ocp.CheckpointManager(_directory(workdir), item_names=ITEMS, options=options)


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state: PyTree,
  config: ml_collections.ConfigDict,
  *,
  data: DataPosition | None = None,
  metrics: dict[str, float] | None = None,
  force: bool = False,
) -> bool:
  """Saves (asynchronously) when the policies ask for this step, or always with force.

  `step` is the host's count (== state.step): reading state.step would wait for the device.
  `data` defaults to step * batch_size examples (a run that never changed its batch size).
  `metrics` rank checkpoints for config.best_checkpoint_metric.
  """
  data = data or DataPosition(step * config.batch_size, config.batch_size, config.seed)
  return manager.save(
    step,
    metrics=metrics,
    force=force,
    args=ocp.args.Composite(
      state=ocp.args.PyTreeSave(state),
      data=ocp.args.JsonSave(data.to_json()),
      config=ocp.args.JsonSave(config.to_dict()),
    ),
  )


def restore_latest(manager: ocp.CheckpointManager, state: PyTree) -> PyTree | None:
  """The latest committed checkpoint restored into `state`'s structure and shardings, or None.

  The shardings are `state`'s, so a run saved on one device count resumes on another. A damaged
  latest checkpoint is not skipped: resuming from an earlier one is the user's choice (it retrains
  the steps in between), so the message says how.

  Raises:
    RestoreError: the checkpoint does not fit `state` (a permitted config change the state cannot
      follow), or it is damaged; the message names its step and the step before it.
  """
  step = manager.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  try:
    return _restore_state(
      manager, step, abstract, ocp.checkpoint_utils.construct_restore_args(abstract)
    )
  except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many kinds)
    logging.debug("Restoring %s/%d failed: %s", manager.directory, step, _reason(e))
    mismatch = _mismatch(manager, step, abstract, e)
    if mismatch:
      raise errors.RestoreError(
        f"{manager.directory}/{step} cannot be restored into the state this config builds "
        f"({mismatch}): train this config in another --workdir, or resume with the config the "
        "checkpoint was saved with"
      ) from e
    raise errors.RestoreError(
      _damaged(manager.directory, step, manager.all_steps(), training=True)
    ) from e


def _damaged(directory: str, step: int, steps, *, training: bool) -> str:
  """The one-line message for checkpoint `step` of `directory` that cannot be read."""
  earlier = [s for s in steps if s < step]
  head = _damaged_head(directory, step)
  if training and earlier:
    advice = (
      f"nothing was changed: move it out of {directory} to resume from step "
      f"{max(earlier)}, the step before it, or train in another --workdir"
    )
  elif training:
    advice = (
      f"no earlier checkpoint is left: delete {directory}/{step} to train from step 0, "
      "or train in another --workdir"
    )
  elif earlier:
    advice = f"pass --step={max(earlier)} to use the step before it"
  else:
    advice = "no earlier checkpoint is left: train again (--mode=train)"
  return f"{head}; {advice} (--verbosity=1 logs the reader's error)"


def _damaged_head(directory: str, step: int) -> str:
  return (
    f"{directory}/{step} cannot be read: the checkpoint of step {step} is damaged or incomplete"
  )


def _leaf_key(path) -> tuple[str, ...]:
  """A tree path as names: a state's attribute, a dict's key and a checkpoint's key compare equal."""
  return tuple(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


def _mismatch(
  manager: ocp.CheckpointManager, step: int, abstract: PyTree, error: Exception
) -> str | None:
  """How checkpoint `step` differs from the state `abstract` (a leaf missing, another shape), or
  None when its metadata fits (or cannot be read): then its data is what is damaged."""
  if isinstance(error, _MissingLeaves):
    return str(error)
  try:
    metadata = ocp.PyTreeCheckpointHandler().metadata(
      epath.Path(manager.directory) / str(step) / "state"
    )
    saved = {
      _leaf_key(path): tuple(leaf.shape)
      for path, leaf in jax.tree_util.tree_flatten_with_path(getattr(metadata, "tree", metadata))[0]
    }
  except Exception:  # pylint: disable=broad-except  (unreadable metadata: a damaged checkpoint)
    return None
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    key = _leaf_key(path)
    name = ".".join(key)
    if key not in saved:
      return f"the checkpoint has no {name}"
    if saved[key] != tuple(leaf.shape):
      return f"{name} is {saved[key]} in the checkpoint, {tuple(leaf.shape)} in this config's state"
  return None


def _reason(error: Exception) -> str:
  return " ".join(f"{type(error).__name__}: {error}".split())[:300]


class _MissingLeaves(ValueError):
  """The checkpoint lacks leaves of the state asked for (orbax would hand back the abstract ones)."""


def _restore_state(manager: ocp.CheckpointManager, step: int, item, restore_args):
  """The `state` item of checkpoint `step`, restored into `item`'s structure (abstract leaves).

  What the checkpoint holds beyond `item` is not read (partial restore: the discriminator's BatchNorm
  statistics of older checkpoints, inference's generator-only reads). A leaf of `item` that the
  checkpoint lacks raises _MissingLeaves (a ValueError) naming it (orbax would hand back the
  abstract leaf).
  """
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
    ),
  ).state
  missing = [
    jax.tree_util.keystr(path)
    for path, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]
    if isinstance(leaf, jax.ShapeDtypeStruct)
  ]
  if missing:
    raise _MissingLeaves(
      f"the checkpoint lacks {len(missing)} array(s) of this state, e.g. {', '.join(missing[:3])}"
    )
  return restored


def restore_data_position(
  manager: ocp.CheckpointManager, step: int, config: ml_collections.ConfigDict
) -> DataPosition:
  """The stream position saved with `step` (checkpoints older than the `data` item: step batches)."""
  # The directory, not manager.item_metadata(): that warns about every item it is not asked about.
  if os.path.isdir(os.path.join(manager.directory, str(step), "data")):
    saved = manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
    return DataPosition(**saved)
  return DataPosition(step * config.batch_size, config.batch_size, config.seed)


def saved_config(
  manager: ocp.CheckpointManager, step: int | None = None
) -> ml_collections.ConfigDict | None:
  """The config saved with `step` (default: the latest checkpoint), or None without checkpoints.

  Raises:
    RestoreError: the config cannot be read (a damaged checkpoint), in training's words.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  try:
    saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
    logging.debug("Reading the config of %s/%d failed: %s", manager.directory, step, _reason(e))
    raise errors.RestoreError(
      _damaged(manager.directory, step, manager.all_steps(), training=True)
    ) from e
  return ml_collections.ConfigDict(saved)


class InferenceModel(NamedTuple):
  """What inference needs from a run: its config, the checkpoint's step, the generator's variables."""

  config: ml_collections.ConfigDict
  step: int
  g_variables: dict  # {"params": ..., "batch_stats": ...}


def restore_for_inference(
  workdir: str, step: int | None = None, sharding: jax.sharding.Sharding | None = None
) -> InferenceModel:
  """Reads the generator of a run's checkpoint, without building optimizers or the discriminator.

  The saved config rebuilds the generator's abstract shapes, and only those leaves are read, placed
  with `sharding`, whatever the device count the run was saved from. Nothing in workdir changes.
  When the run kept an EMA of the generator (config.g_ema_decay > 0), the EMA's variables are the
  ones returned; with precise BatchNorm statistics for the step (models/precise_bn.py), with those.
  Without `step`, a damaged latest checkpoint is passed over, with a warning, for the latest one that
  can be read.

  Args:
    workdir: the run's --workdir.
    step: a checkpoint step; None: the latest (readable one).
    sharding: where to put the arrays (default: the first local device).

  Raises:
    FileNotFoundError: no checkpoint (or not that step) in workdir, with the steps there are.
    RestoreError: the checkpoint `step` (without it: every checkpoint) is damaged; the message
      names the step and what to do.
  """
  directory = _directory(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(
      f"{workdir} holds no checkpoints/ directory: train there first "
      "(--mode=train) or point --workdir at a run"
    )
  # No save, no tmp-directory cleanup: a run still training in workdir is left alone.
  manager = ocp.CheckpointManager(
    directory, item_names=ITEMS, options=ocp.CheckpointManagerOptions(create=False)
  )
  try:
    steps = sorted(manager.all_steps())
    if not steps:
      raise FileNotFoundError(f"{directory} holds no committed checkpoint")
    if step is not None and step not in steps:
      raise FileNotFoundError(
        f"{directory} has no checkpoint at step {step}: it has steps {', '.join(map(str, steps))}"
      )
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    tries = [step] if step is not None else steps[::-1]
    for i, candidate in enumerate(tries):
      try:
        model = _read_generator(manager, candidate, sharding)
      except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many)
        logging.debug("Reading %s/%d failed: %s", directory, candidate, _reason(e))
        message = _damaged(directory, candidate, steps, training=False)
        if i + 1 == len(tries):
          raise errors.RestoreError(
            message if step is not None else f"no checkpoint in {directory} can be read: {message}"
          ) from e
        logging.warning(
          "%s; using step %d, the one before it (--step picks another)",
          _damaged_head(directory, candidate),
          tries[i + 1],
        )
        continue
      stats = precise_bn.read(workdir, candidate)  # the run's precise BatchNorm statistics
      if stats is None:
        return model
      stats = jax.device_put(stats, sharding)
      return model._replace(g_variables=precise_bn.apply(model.g_variables, stats))
  finally:
    manager.close()


def _read_generator(
  manager: ocp.CheckpointManager, step: int, sharding: jax.sharding.Sharding
) -> InferenceModel:
  """The InferenceModel of checkpoint `step`: its config, and its generator's variables."""
  config = saved_config(manager, step)
  g_variables = models.abstract_variables(models.create_generator(config), config.image_size)
  use_ema = config.get("g_ema_decay", 0.0) > 0
  item = (
    {"g_ema": g_variables}
    if use_ema
    else {"g_params": g_variables["params"], "g_batch_stats": g_variables["batch_stats"]}
  )
  restore_args = jax.tree.map(
    lambda x: ocp.ArrayRestoreArgs(sharding=sharding, global_shape=x.shape, dtype=x.dtype), item
  )
  restored = _restore_state(manager, step, item, restore_args)
  if use_ema:
    return InferenceModel(config, step, restored["g_ema"])
  return InferenceModel(
    config, step, {"params": restored["g_params"], "batch_stats": restored["g_batch_stats"]}
  )
