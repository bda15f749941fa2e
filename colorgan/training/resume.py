"""Resume policy: whether a run may continue from its workdir's checkpoint, and from where.

A rerun of the same command continues the run: the config may change only in its bookkeeping keys
(FREE_KEYS) unless config.allow_config_change is set, and the data stream goes on at the example
the checkpoint stopped at. Reading and writing checkpoints is colorgan.checkpointing's.
"""

import json
import math
from typing import Any, NamedTuple

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp

from colorgan import checkpointing
from colorgan import configuration
from colorgan import errors
from colorgan.training import heartbeat as heartbeat_lib
from colorgan.training import schedules
from colorgan.training import step as step_lib
from colorgan.training import warm_start
from colorgan.training.state import GanState

# Keys that may change between a run and its resumption: they decide how long the run is and what it
# writes, not what it learns. Any other key (model.*, optim.*, loss.*, data.*, seed, image_size,
# batch_size, ...) changes the training itself; a resumed run refuses a change there unless
# config.allow_config_change is set. A new bookkeeping key belongs here.
FREE_KEYS = frozenset(
  {
    "total_steps",
    "log_every_steps",
    "sample_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "num_samples",
    "nan_policy",
    "allow_config_change",
    "best_checkpoint_metric",
    "best_checkpoint_mode",
    "data.num_parallel_calls",
    "data.prefetch",
    "data.cache",
    "eval_every_steps",
    "eval_batch_size",
    "num_eval_images",
    # Evaluation only.
    "eval.inception_weights",
    "eval.lpips_weights",
    "eval.fid_reference",
    "eval.hint_counts",
    # Chosen after training, on the validation photos.
    "vividness.calibrate",
    "vividness.grid_points",
    "vividness.psnr_tolerance",
    "vividness.num_images",
    "vividness.min_temperature",
    # Only read when a run starts from scratch: a resumed run never looks at them again.
    "init_generator_from",
    "model.init_from",
    # The same parameters and function on both layer paths: a run moves between CPU and GPU/TPU.
    "model.fast_layers",
  }
)


class Start(NamedTuple):
  """Where a run starts: its state (restored, or fresh and warm-started) and its data stream."""

  state: GanState
  data_start: int  # global batches of the training stream to skip


def start(
  config: ml_collections.ConfigDict,
  manager: ocp.CheckpointManager,
  generator: nn.Module,
  discriminator: nn.Module,
  mesh: jax.sharding.Mesh,
  heartbeat: heartbeat_lib.Heartbeat,
) -> Start:
  """The latest checkpoint in `manager` if there is one, else a fresh state (config.seed) with
  config.init_generator_from / model.init_from applied.

  Raises:
    errors.ConfigError: the checkpoint was trained with a different config (check_config_change).
    errors.RestoreError: the latest checkpoint does not fit this config or is damaged.
  """
  check_config_change(manager, config)  # before anything else in workdir changes
  heartbeat.set_activity("initializing the networks")
  state = step_lib.init_train_state(config, generator, discriminator, mesh)
  heartbeat.set_activity("restoring the latest checkpoint")
  restored = checkpointing.restore_latest(manager, state)
  if restored is None:
    state = warm_start.apply(config, state, mesh)
    return Start(state, int(state.step))
  step = int(restored.step)
  position = checkpointing.restore_data_position(manager, step, config)
  logging.info("Resumed from %s at step %d", manager.directory, step)
  return Start(restored, data_start_batch(position, config.batch_size))


def data_start_batch(position: checkpointing.DataPosition, batch_size: int) -> int:
  """Global batches of `batch_size` to skip so the stream continues at `position`.

  With an unchanged batch size this is exact; after a (permitted) batch size change the stream
  resumes at the next whole batch, skipping fewer than batch_size examples.
  """
  start_batch = -(-position.examples // batch_size)
  if start_batch * batch_size != position.examples:
    logging.warning(
      "The batch size changed from %d to %d: the data stream resumes at example %d, skipping %d",
      position.batch_size,
      batch_size,
      start_batch * batch_size,
      start_batch * batch_size - position.examples,
    )
  return start_batch


def _schedule_horizon_keys(*flat_configs: dict[str, Any]) -> set[str]:
  """FREE_KEYS that stop being free: total_steps, where a decaying schedule is built from it.

  linear_decay and cosine are functions of total_steps: resuming with another total_steps would
  move the run along a new learning-rate curve (up it, when the run is lengthened). That is a change
  of training, made only on request (allow_config_change): the schedule is then rebuilt over the new
  total_steps from the resumed step on.
  """
  decaying = any(
    flat.get(f"optim.{net}_schedule", "constant") != "constant"
    for flat in flat_configs
    for net in ("g", "d")
  )
  return {"total_steps"} if decaying else set()


def _flat_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  # Compared as JSON, as saved: a tuple in the config is a list in the checkpoint.
  return configuration.flatten(json.loads(config.to_json_best_effort()))


def config_changes(
  saved: ml_collections.ConfigDict | dict, config: ml_collections.ConfigDict
) -> tuple[list[str], list[str]]:
  """(keys whose values differ outside the free keys, keys present on one side only).

  The free keys are FREE_KEYS, less total_steps when either config decays a learning rate.
  """
  old, new = configuration.flatten(saved), _flat_json(config)
  free = FREE_KEYS - _schedule_horizon_keys(old, new)
  differing = sorted(
    k
    for k in old.keys() & new.keys()
    if k not in free and old[k] != new[k] and not _both_nan(old[k], new[k])
  )
  one_sided = sorted((old.keys() ^ new.keys()) - free)
  return differing, one_sided


def _both_nan(a: Any, b: Any) -> bool:
  return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


def check_config_change(manager: ocp.CheckpointManager, config: ml_collections.ConfigDict) -> None:
  """Refuses to resume a run whose latest checkpoint was trained with a different recipe.

  Raises:
    errors.ConfigError: a key outside FREE_KEYS differs, and config.allow_config_change is not set.
      The message lists the keys with both values.
  """
  saved = checkpointing.saved_config(manager)
  if saved is None:
    return
  differing, one_sided = config_changes(saved, config)
  if one_sided:  # a newer colorgan added keys (or an older one dropped them): their defaults apply
    logging.warning(
      "Config keys present only in the checkpoint or only now: %s", ", ".join(one_sided)
    )
  if not differing:
    return
  old, new = configuration.flatten(saved), _flat_json(config)
  listing = ", ".join(f"{k} ({old[k]!r} -> {new[k]!r})" for k in differing)
  if "total_steps" in differing:
    listing += f" ({_schedule_jump(old, new, manager.latest_step())})"
  if config.allow_config_change:
    logging.warning("Resuming with a changed config (allow_config_change): %s", listing)
    return
  raise errors.ConfigError(
    f"{manager.directory} was trained with a different config: {listing}; use another --workdir, "
    "or pass --config.allow_config_change=True to continue with the new values"
  )


def _schedule_jump(old: dict[str, Any], new: dict[str, Any], step: int) -> str:
  """What the new config does to the learning rates at the resumed step, in words (flat configs)."""
  old = {**new, **old}  # a checkpoint from before a key existed: the new value stands in

  def rate(flat, net):
    return float(
      schedules.create_schedule(
        flat[f"optim.{net}_schedule"],
        flat[f"optim.{net}_learning_rate"],
        total_steps=flat["total_steps"],
        warmup_steps=flat["optim.warmup_steps"],
        decay_steps=flat["optim.decay_steps"],
      )(step)
    )

  rates = [
    f"the {name}'s learning rate at step {step} would go from {rate(old, net):.3g} to "
    f"{rate(new, net):.3g}"
    for net, name in (("g", "generator"), ("d", "discriminator"))
    if {old[f"optim.{net}_schedule"], new[f"optim.{net}_schedule"]} != {"constant"}
  ]
  return "; ".join(rates) + ": linear_decay and cosine schedules are built from total_steps"
