"""A thin layer over orbax's CheckpointManager: the whole GanState, the data position and the config.

A checkpoint `workdir/checkpoints/<step>/` holds three items:
  state   the GanState (both networks, BatchNorm statistics, optimizer states, step, rng),
  data    the position in the training stream, {"examples": ..., "batch_size": ..., "seed": ...},
  config  the run's config as JSON.
Orbax writes each checkpoint into `<step>.orbax-checkpoint-tmp-*` and renames it once complete, so a
process killed at any moment (also mid-save) leaves only committed steps behind; leftover tmp
directories are deleted when the next run creates its manager.
"""

import functools
import json
import math
import os
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from colorgan import configuration
from colorgan import models
from colorgan.training import schedules
from colorgan.training.state import GanState

ITEMS = ("state", "data", "config")

# Keys that may change between a run and its resumption: they decide how long the run is and what it
# writes, not what it learns. Any other key (model.*, optim.*, loss.*, data.*, seed, image_size,
# batch_size, ...) changes the training itself; a resumed run refuses a change there unless
# config.allow_config_change is set. A new bookkeeping key belongs here.
FREE_KEYS = frozenset({
    "total_steps", "log_every_steps", "sample_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "num_samples", "nan_policy", "allow_config_change",
    "best_checkpoint_metric", "best_checkpoint_mode", "data.num_parallel_calls", "data.prefetch",
    "data.cache", "eval_every_steps", "eval_batch_size", "num_eval_images",
    # Evaluation only.
    "eval.inception_weights", "eval.lpips_weights", "eval.fid_reference", "eval.hint_counts",
    # Only read when a run starts from scratch: a resumed run never looks at them again.
    "init_generator_from", "model.init_from",
    # The same parameters and function on both layer paths: a run moves between CPU and GPU/TPU.
    "model.fast_layers",
})


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
    preserve.append(policies.BestN(
        get_metric_fn=metric, n=1,
        reverse=config.best_checkpoint_mode == "min",  # BestN keeps the end of the sorted list
        keep_checkpoints_without_metrics=False))  # preemption saves: kept while among the latest
    # best_fn makes orbax write each checkpoint's metrics beside it: without them on disk a resumed
    # run's manager would not know the best checkpoint of the run before and would delete it.
    ranking = dict(best_fn=metric, best_mode=config.best_checkpoint_mode)
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=policies.AnySavePolicy([
          policies.FixedIntervalPolicy(config.checkpoint_every_steps),
          policies.PreemptionCheckpointingPolicy(),
      ]),
      preservation_policy=policies.AnyPreservationPolicy(preserve),
      cleanup_tmp_directories=True,
      create=True, **ranking)
  return ocp.CheckpointManager(_directory(workdir), item_names=ITEMS, options=options)


def save(manager: ocp.CheckpointManager, step: int, state: GanState,
         config: ml_collections.ConfigDict, *, data: DataPosition | None = None,
         metrics: dict[str, float] | None = None, force: bool = False) -> bool:
  """Saves (asynchronously) when the policies ask for this step, or always with force.

  `step` is the host's count (== state.step): reading state.step would wait for the device.
  `data` defaults to step * batch_size examples (a run that never changed its batch size).
  `metrics` rank checkpoints for config.best_checkpoint_metric.
  """
  data = data or DataPosition(step * config.batch_size, config.batch_size, config.seed)
  return manager.save(step, metrics=metrics, force=force, args=ocp.args.Composite(
      state=ocp.args.PyTreeSave(state), data=ocp.args.JsonSave(data.to_json()),
      config=ocp.args.JsonSave(config.to_dict())))


class RestoreError(RuntimeError):
  """The latest checkpoint cannot be read into this run's state; the message is one line."""


def restore_latest(manager: ocp.CheckpointManager, state: GanState) -> GanState | None:
  """The latest committed checkpoint restored into `state`'s structure and shardings, or None.

  The shardings are `state`'s, so a run saved on one device count resumes on another.

  Raises:
    RestoreError: the checkpoint does not fit `state` (a permitted config change the state cannot
      follow) or is damaged; the message names it and the previous step.
  """
  step = manager.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  try:
    return _restore_state(manager, step, abstract,
                          ocp.checkpoint_utils.construct_restore_args(abstract))
  except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many kinds)
    earlier = [s for s in manager.all_steps() if s < step]
    fallback = (f"move it out of {manager.directory} to resume from step {max(earlier)}"
                if earlier else "or train in another --workdir")
    raise RestoreError(f"{manager.directory}/{step} cannot be restored into the state this config "
                       f"builds ({_reason(e)}): if the config changed, train in another --workdir; "
                       f"if the checkpoint is damaged, {fallback}") from e


def _reason(error: Exception) -> str:
  return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def _restore_state(manager: ocp.CheckpointManager, step: int, item, restore_args):
  """The `state` item of checkpoint `step`, restored into `item`'s structure (abstract leaves).

  What the checkpoint holds beyond `item` is not read (partial restore: the discriminator's BatchNorm
  statistics of older checkpoints, inference's generator-only reads). A leaf of `item` that the
  checkpoint lacks raises ValueError naming it (orbax would hand back the abstract leaf).
  """
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=True))).state
  missing = [jax.tree_util.keystr(path) for path, leaf in
             jax.tree_util.tree_flatten_with_path(restored)[0]
             if isinstance(leaf, jax.ShapeDtypeStruct)]
  if missing:
    raise ValueError(f"the checkpoint lacks {len(missing)} array(s) of this state, e.g. "
                     f"{', '.join(missing[:3])}")
  return restored


def restore_data_position(manager: ocp.CheckpointManager, step: int,
                          config: ml_collections.ConfigDict) -> DataPosition:
  """The stream position saved with `step` (checkpoints older than the `data` item: step batches)."""
  # The directory, not manager.item_metadata(): that warns about every item it is not asked about.
  if os.path.isdir(os.path.join(manager.directory, str(step), "data")):
    saved = manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
    return DataPosition(**saved)
  return DataPosition(step * config.batch_size, config.batch_size, config.seed)


def data_start_batch(position: DataPosition, batch_size: int) -> int:
  """Global batches of `batch_size` to skip so the stream continues at `position`.

  With an unchanged batch size this is exact; after a (permitted) batch size change the stream
  resumes at the next whole batch, skipping fewer than batch_size examples.
  """
  start = -(-position.examples // batch_size)
  if start * batch_size != position.examples:
    logging.warning("The batch size changed from %d to %d: the data stream resumes at example %d, "
                    "skipping %d", position.batch_size, batch_size, start * batch_size,
                    start * batch_size - position.examples)
  return start


def saved_config(manager: ocp.CheckpointManager,
                 step: int | None = None) -> ml_collections.ConfigDict | None:
  """The config saved with `step` (default: the latest checkpoint), or None without checkpoints."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  return ml_collections.ConfigDict(
      manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config)


def _schedule_horizon_keys(*flat_configs: dict[str, Any]) -> set[str]:
  """FREE_KEYS that stop being free: total_steps, where a decaying schedule is built from it.

  linear_decay and cosine are functions of total_steps: resuming with another total_steps would
  move the run along a new learning-rate curve (up it, when the run is lengthened). That is a change
  of training, made only on request (allow_config_change): the schedule is then rebuilt over the new
  total_steps from the resumed step on.
  """
  decaying = any(flat.get(f"optim.{net}_schedule", "constant") != "constant"
                 for flat in flat_configs for net in ("g", "d"))
  return {"total_steps"} if decaying else set()


def config_changes(saved: ml_collections.ConfigDict | dict,
                   config: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
  """(keys whose values differ outside the free keys, keys present on one side only).

  The free keys are FREE_KEYS, less total_steps when either config decays a learning rate.
  """
  # Compared as JSON, as saved: a tuple in the config is a list in the checkpoint.
  old = configuration.flatten(saved)
  new = configuration.flatten(json.loads(config.to_json_best_effort()))
  free = FREE_KEYS - _schedule_horizon_keys(old, new)
  differing = sorted(k for k in old.keys() & new.keys()
                     if k not in free and old[k] != new[k] and not _both_nan(old[k], new[k]))
  one_sided = sorted((old.keys() ^ new.keys()) - free)
  return differing, one_sided


def _both_nan(a: Any, b: Any) -> bool:
  return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


def check_config_change(manager: ocp.CheckpointManager, config: ml_collections.ConfigDict) -> None:
  """Refuses to resume a run whose latest checkpoint was trained with a different recipe.

  Raises:
    configuration.ConfigError: a key outside FREE_KEYS differs, and config.allow_config_change is
      not set. The message lists the keys with both values.
  """
  saved = saved_config(manager)
  if saved is None:
    return
  differing, one_sided = config_changes(saved, config)
  if one_sided:  # a newer colorgan added keys (or an older one dropped them): their defaults apply
    logging.warning("Config keys present only in the checkpoint or only now: %s",
                    ", ".join(one_sided))
  if not differing:
    return
  old = configuration.flatten(saved)
  new = configuration.flatten(json.loads(config.to_json_best_effort()))
  listing = ", ".join(f"{k} ({old[k]!r} -> {new[k]!r})" for k in differing)
  if "total_steps" in differing:
    listing += f" ({_schedule_jump(old, new, manager.latest_step())})"
  if config.allow_config_change:
    logging.warning("Resuming with a changed config (allow_config_change): %s", listing)
    return
  raise configuration.ConfigError(
      f"{manager.directory} was trained with a different config: {listing}; use another --workdir, "
      "or pass --config.allow_config_change=True to continue with the new values")


def _schedule_jump(old: dict[str, Any], new: dict[str, Any], step: int) -> str:
  """What the new config does to the learning rates at the resumed step, in words (flat configs)."""
  old = {**new, **old}  # a checkpoint from before a key existed: the new value stands in

  def rate(flat, net):
    return float(schedules.create_schedule(
        flat[f"optim.{net}_schedule"], flat[f"optim.{net}_learning_rate"],
        total_steps=flat["total_steps"], warmup_steps=flat["optim.warmup_steps"],
        decay_steps=flat["optim.decay_steps"])(step))

  rates = [f"the {name}'s learning rate at step {step} would go from {rate(old, net):.3g} to "
           f"{rate(new, net):.3g}" for net, name in (("g", "generator"), ("d", "discriminator"))
           if {old[f"optim.{net}_schedule"], new[f"optim.{net}_schedule"]} != {"constant"}]
  return "; ".join(rates) + ": linear_decay and cosine schedules are built from total_steps"


class InferenceModel(NamedTuple):
  """What inference needs from a run: its config, the checkpoint's step, the generator's variables."""
  config: ml_collections.ConfigDict
  step: int
  g_variables: dict  # {"params": ..., "batch_stats": ...}


def restore_for_inference(workdir: str, step: int | None = None,
                          sharding: jax.sharding.Sharding | None = None) -> InferenceModel:
  """Reads the generator of a run's checkpoint, without building optimizers or the discriminator.

  The saved config rebuilds the generator's abstract shapes, and only those leaves are read, placed
  with `sharding`, whatever the device count the run was saved from. Nothing in workdir changes.
  When the run kept an EMA of the generator (config.g_ema_decay > 0), the EMA's variables are the
  ones returned.

  Args:
    workdir: the run's --workdir.
    step: a checkpoint step; None: the latest.
    sharding: where to put the arrays (default: the first local device).

  Raises:
    FileNotFoundError: no checkpoint (or not that step) in workdir, with the steps there are.
    RestoreError: the checkpoint is damaged; the message names the step before it.
  """
  directory = _directory(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{workdir} holds no checkpoints/ directory: train there first "
                            "(--mode=train) or point --workdir at a run")
  # No save, no tmp-directory cleanup: a run still training in workdir is left alone.
  manager = ocp.CheckpointManager(directory, item_names=ITEMS,
                                  options=ocp.CheckpointManagerOptions(create=False))
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"{directory} holds no committed checkpoint")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise FileNotFoundError(f"{directory} has no checkpoint at step {step}: it has steps "
                            f"{', '.join(map(str, sorted(steps)))}")
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    config = saved_config(manager, step)
    generator = models.create_generator(config)
    size = config.image_size
    abstract = jax.eval_shape(functools.partial(generator.init, train=False), jax.random.key(0),
                              jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32))
    g_variables = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    use_ema = config.get("g_ema_decay", 0.0) > 0
    item = ({"g_ema": g_variables} if use_ema else
            {"g_params": g_variables["params"], "g_batch_stats": g_variables["batch_stats"]})
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=sharding, global_shape=x.shape, dtype=x.dtype),
        item)
    restored = _restore_state(manager, step, item, restore_args)
  except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many kinds)
    earlier = [s for s in steps if s < step]
    fallback = (f"pass --step={max(earlier)} to use the step before it" if earlier
                else "train again")
    raise RestoreError(f"{directory}/{step} cannot be read ({_reason(e)}): the checkpoint is "
                       f"damaged or incomplete; {fallback}") from e
  finally:
    manager.close()
  if use_ema:
    return InferenceModel(config, step, restored["g_ema"])
  return InferenceModel(config, step, {"params": restored["g_params"],
                                       "batch_stats": restored["g_batch_stats"]})
