"""Config checks at the edge: a bad value is one line naming the key and the fix, before any work.

`validate` is the one place for the checks a config allows without its data, devices or files
(what the data holds is checked when it is read, the device count when the mesh is made). A shared
leaf: the registries it checks names against (models, losses, schedules, metrics) are imported
only when it runs.
"""

import math
import os
from typing import Any

import ml_collections

from colorgan import errors

COMPUTE_DTYPES = ("float32", "bfloat16")
DATA_SOURCES = ("bundled", "folder", "tfds")
RESIZE_MODES = ("crop", "resize")
NAN_POLICIES = ("stop", "skip")


def flatten(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict[str, Any]:
  """{"model": {"num_downs": 8}} -> {"model.num_downs": 8}."""
  items = config.items() if isinstance(config, dict) else config.to_dict().items()
  flat = {}
  for key, value in items:
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _choice(config, key: str, choices) -> None:
  value = _get(config, key)
  if value not in choices:
    raise errors.ConfigError(
      f"config.{key}={value!r} is not known: choose one of {', '.join(choices)}"
    )


def _get(config, key: str):
  value = config
  for part in key.split("."):
    value = value[part]
  return value


def _at_least(config, key: str, minimum) -> None:
  value = _get(config, key)
  if not isinstance(value, (int, float)) or value < minimum:
    raise errors.ConfigError(f"config.{key}={value!r} must be a number >= {minimum}")


def _between(config, key: str, low, high) -> None:
  value = _get(config, key)
  if not isinstance(value, (int, float)) or not low <= value < high:
    raise errors.ConfigError(f"config.{key}={value!r} must be in [{low}, {high})")


def _check_data_source(config: ml_collections.ConfigDict) -> None:
  """The keys a source cannot do without (whether the data is there is checked when it is read)."""
  data = config.data
  if data.source == "folder" and not data.path:
    raise errors.ConfigError(
      "config.data.source='folder' needs config.data.path: add --config.data.path=/path/to/photos"
    )
  if data.source == "tfds":
    for key, example in (
      ("tfds_name", "coco/2017"),
      ("train_split", "train"),
      ("eval_split", "validation"),
      ("image_key", "image"),
    ):
      if not data[key]:
        raise errors.ConfigError(
          f"config.data.source='tfds' needs config.data.{key}: e.g. --config.data.{key}={example}"
        )


def generator_depth(config: ml_collections.ConfigDict) -> int:
  """The U-Net's depth: config.model.num_downs, or log2(image_size) for 0."""
  from colorgan import models  # pylint: disable=g-import-not-at-top  (flax: only when asked)

  return config.model.num_downs or models.unet_num_downs(config.image_size)


def _check_mesh(config: ml_collections.ConfigDict) -> None:
  """config.mesh.*; whether the sizes fit the devices is parallel.mesh_shape's to say."""
  for key in ("mesh.data", "mesh.model"):
    value = _get(config, key)
    if not isinstance(value, int) or (value < 1 and value != -1):
      raise errors.ConfigError(
        f"config.{key}={value!r} must be a positive number of devices or -1 "
        "(all the devices the other axis leaves)"
      )
  if config.mesh.data == -1 and config.mesh.model == -1:
    raise errors.ConfigError(
      "config.mesh.data and config.mesh.model are both -1: set at most one to -1"
    )


def _check_registry_names(config: ml_collections.ConfigDict) -> None:
  """The names config.* picks from colorgan's registries (networks, losses, schedules)."""
  # pylint: disable=g-import-not-at-top  (flax, optax: imported when a config is checked)
  from colorgan import models
  from colorgan.training import losses
  from colorgan.training import schedules

  # pylint: enable=g-import-not-at-top
  _choice(config, "model.generator", tuple(models.GENERATORS))
  _choice(config, "model.discriminator", tuple(models.DISCRIMINATORS))
  _choice(config, "loss.gan", tuple(losses.GAN_LOSSES) + ("none",))
  _choice(config, "loss.reconstruction", tuple(losses.RECONSTRUCTION_LOSSES))
  _choice(config, "loss.penalty", ("auto",) + tuple(losses.PENALTIES))
  _choice(config, "loss.colorfulness", ("none",) + tuple(losses.COLORFULNESS_LOSSES))
  _choice(config, "optim.g_schedule", schedules.SCHEDULES)
  _choice(config, "optim.d_schedule", schedules.SCHEDULES)


# The least value of each numeric key. total_steps=0 would train nothing and save no checkpoint:
# evaluate and colorize need one.
_MINIMUMS = (
  ("image_size", 32),
  ("batch_size", 1),
  ("total_steps", 1),
  ("log_every_steps", 1),
  ("sample_every_steps", 1),
  ("checkpoint_every_steps", 1),
  ("keep_checkpoints", 1),
  ("num_samples", 0),
  ("eval_every_steps", 0),
  ("eval_batch_size", 1),
  ("num_eval_images", 0),
  ("model.g_base_features", 1),
  ("model.d_base_features", 1),
  ("model.d_layers", 1),
  ("model.num_downs", 0),
  ("loss.gan_weight", 0),
  ("loss.l1_weight", 0),
  ("loss.penalty_weight", 0),
  ("loss.colorfulness_weight", 0),
  ("loss.colorfulness_margin", 0),
  ("loss.feature_matching_weight", 0),
  ("loss.classification_weight", 0),
  ("loss.rebalance", 0),
  ("loss.class_prior_batches", 1),
  ("vividness.grid_points", 2),
  ("vividness.psnr_tolerance", 0),
  ("vividness.num_images", 1),
  ("vividness.min_temperature", 0.01),
  ("vividness.colorfulness_share", 0),
  ("precise_bn_batches", 0),
  ("optim.g_learning_rate", 0),
  ("optim.d_learning_rate", 0),
  ("data.load_size", 1),
  ("data.prefetch", 0),
  ("data.split_seed", 0),
  ("data.shuffle_window", 1),
  ("d_warmup_steps", 0),
  ("optim.warmup_steps", 0),
  ("optim.decay_steps", 0),
  ("optim.d_steps", 1),
  ("optim.clip_grad_norm", 0),
)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first value the run cannot use."""
  _check_ranges(config)
  _check_choices(config)
  _validate_eval(config)
  _check_training_metric(config)
  _check_best_checkpoint_interval(config)
  _check_mesh(config)
  _validate_recipes(config)
  _validate_hints(config)
  _check_image_size(config)


def _check_ranges(config: ml_collections.ConfigDict) -> None:
  """Numbers within their ranges: sizes, steps, weights, rates, fractions."""
  for key, minimum in _MINIMUMS:
    _at_least(config, key, minimum)
  if config.data.eval_fraction == 1:  # every photo held out: none left to train on
    raise errors.ConfigError(
      "config.data.eval_fraction=1.0 leaves no photo to train on: to score "
      "every photo of a folder, use --mode=evaluate --input=FOLDER"
    )
  for key in ("model.dropout_rate", "optim.b1", "optim.b2", "data.eval_fraction", "g_ema_decay"):
    _between(config, key, 0, 1)
  for key in (
    "d_warmup_steps",
    "optim.warmup_steps",
    "optim.decay_steps",
    "optim.d_steps",
    "precise_bn_batches",
  ):
    if not isinstance(_get(config, key), int):
      raise errors.ConfigError(f"config.{key}={_get(config, key)!r} must be a whole number")
  calls = config.data.num_parallel_calls
  if not isinstance(calls, int) or (calls < 1 and calls != -1):
    raise errors.ConfigError(
      f"config.data.num_parallel_calls={calls!r} must be -1 (tf.data AUTOTUNE) or >= 1"
    )
  if config.loss.huber_delta <= 0:
    raise errors.ConfigError(f"config.loss.huber_delta={config.loss.huber_delta!r} must be > 0")


def _check_choices(config: ml_collections.ConfigDict) -> None:
  """Names and switches among their choices: dtype, registries, layers, data source, policies."""
  _choice(config, "compute_dtype", COMPUTE_DTYPES)
  _check_registry_names(config)
  fast = config.model.fast_layers
  if not (isinstance(fast, bool) or fast == "auto"):  # 1 == True: bools only
    raise errors.ConfigError(
      f"config.model.fast_layers={fast!r} is not known: choose auto (matrix "
      "products on CPU, flax's convolutions on GPU/TPU), True or False"
    )
  _choice(config, "model.ab_head", ("regression", "classification"))
  if config.model.ab_head == "classification" and config.model.generator != "unet":
    raise errors.ConfigError("config.model.ab_head='classification' is for the unet generator")
  _choice(config, "data.source", DATA_SOURCES)
  _choice(config, "data.resize_mode", RESIZE_MODES)
  _check_data_source(config)
  _choice(config, "nan_policy", NAN_POLICIES)
  _choice(config, "best_checkpoint_mode", ("min", "max"))
  if not isinstance(config.allow_config_change, bool):
    raise errors.ConfigError(
      f"config.allow_config_change={config.allow_config_change!r} must be True or False"
    )


def _check_best_checkpoint_interval(config: ml_collections.ConfigDict) -> None:
  """A training metric ranks a checkpoint by the log interval that ends at it: one must end there."""
  if (
    config.best_checkpoint_metric
    and not config.best_checkpoint_metric.startswith(EVAL_PREFIX)
    and config.checkpoint_every_steps % config.log_every_steps
  ):
    raise errors.ConfigError(
      f"config.checkpoint_every_steps={config.checkpoint_every_steps} must be a multiple of "
      f"log_every_steps={config.log_every_steps} with best_checkpoint_metric set: checkpoints "
      "are ranked by the log interval that ends at them"
    )


def _check_image_size(config: ml_collections.ConfigDict) -> None:
  """image_size fits the generator's depth and the data's load_size."""
  size = config.image_size
  if config.model.generator == "resnet_unet":
    if size % 32:
      raise errors.ConfigError(
        f"config.image_size={size} must be a multiple of 32 for the ResNet "
        "U-Net (its encoder downsamples 32x): use "
        f"{max(32, size // 32 * 32)}"
      )
  elif config.model.num_downs == 0 and 2 ** generator_depth(config) != size:
    lower = 2 ** int(math.log2(size))
    raise errors.ConfigError(
      f"config.image_size={size} must be a power of two for the U-Net "
      f"(depth log2(size)): use {lower} or {2 * lower}, or set "
      "config.model.num_downs"
    )
  depth = generator_depth(config)
  if config.model.generator == "unet" and (depth < 5 or size % 2**depth):
    raise errors.ConfigError(
      f"config.model.num_downs={depth} needs >= 5 and image_size divisible "
      f"by 2**num_downs (image_size={size})"
    )
  if config.data.resize_mode == "crop" and config.data.load_size < size:
    raise errors.ConfigError(
      f"config.data.load_size={config.data.load_size} is smaller than "
      f"image_size={size}: crops are taken from the short side resized to "
      "load_size, set it >= image_size"
    )


# best_checkpoint_metric="eval/<name>": the model's <name> in the evaluation at the checkpoint's
# step.
EVAL_PREFIX = "eval/"
# The key that computes each feature metric in evaluation.
_FEATURE_METRIC_KEYS = {
  "fid": "inception_weights",
  "kid": "inception_weights",
  "lpips": "lpips_weights",
}


def _check_training_metric(config: ml_collections.ConfigDict) -> None:
  """A best_checkpoint_metric outside eval/ names one of the train step's metrics."""
  name = config.best_checkpoint_metric
  if not name or name.startswith(EVAL_PREFIX):
    return
  from colorgan.training import step  # pylint: disable=g-import-not-at-top  (flax, optax)

  if name not in step.METRIC_NAMES:
    raise errors.ConfigError(
      f"config.best_checkpoint_metric={name!r} is not a training metric: choose one of "
      f"{', '.join(step.METRIC_NAMES)}, or an evaluation metric (eval/fid, ...)"
    )


def _validate_eval(config: ml_collections.ConfigDict) -> None:
  """config.eval.* (README "Metrics") and a best_checkpoint_metric naming an eval metric."""
  for key, what in (
    ("inception_weights", "python -m colorgan.convert_weights inception IN.pth OUT.npz"),
    ("lpips_weights", "python -m colorgan.convert_weights lpips ALEXNET.pth LIN.pth OUT.npz"),
    (
      "fid_reference",
      "python -m colorgan.fid ... --save_stats=OUT.npz, or pytorch-fid's statistics",
    ),
  ):
    path = config.eval[key]
    if path and not (path.endswith(".npz") and os.path.isfile(path)):
      raise errors.ConfigError(
        f"config.eval.{key}={path} is not a .npz file: make one with "
        f"`{what}`, or set it to '' to leave the metric out"
      )
  if config.eval.fid_reference and not config.eval.inception_weights:
    raise errors.ConfigError(
      "config.eval.fid_reference needs config.eval.inception_weights: FID "
      "compares Inception features"
    )
  name = config.best_checkpoint_metric
  if not name.startswith(EVAL_PREFIX):
    return
  metric = name[len(EVAL_PREFIX) :]
  from colorgan.evaluation import metrics  # pylint: disable=g-import-not-at-top  (clu, dm-pix)

  names = metrics.METRIC_NAMES + metrics.FEATURE_METRIC_NAMES
  if metric not in names:
    raise errors.ConfigError(
      f"config.best_checkpoint_metric={name!r} is not an evaluation metric: "
      f"choose one of {', '.join(EVAL_PREFIX + n for n in names)} (or a "
      "training metric)"
    )
  key = _FEATURE_METRIC_KEYS.get(metric)
  if key and not config.eval[key]:
    raise errors.ConfigError(
      f"config.best_checkpoint_metric={name!r} needs config.eval.{key}: "
      f"without it, evaluation has no {metric}"
    )
  if not config.eval_every_steps or config.checkpoint_every_steps % config.eval_every_steps:
    raise errors.ConfigError(
      f"config.best_checkpoint_metric={name!r} ranks checkpoints by the evaluation at their "
      f"step: config.checkpoint_every_steps={config.checkpoint_every_steps} must be a multiple "
      f"of eval_every_steps={config.eval_every_steps} (> 0)"
    )


def _validate_recipes(config: ml_collections.ConfigDict) -> None:
  """The ResNet U-Net, warm starts, D warm-up and EMA keys (README "Recipes")."""
  if config.model.resnet_depth not in (18, 34):
    raise errors.ConfigError(
      f"config.model.resnet_depth={config.model.resnet_depth!r} is not known: choose 18 or 34"
    )
  if not isinstance(config.model.ab_bound, (int, float)) or not 0 < config.model.ab_bound <= 1:
    raise errors.ConfigError(f"config.model.ab_bound={config.model.ab_bound!r} must be in (0, 1]")
  if config.d_warmup_steps and config.loss.gan == "none":
    raise errors.ConfigError(
      f"config.d_warmup_steps={config.d_warmup_steps} needs a "
      "discriminator: config.loss.gan is 'none' (set a GAN objective or "
      "d_warmup_steps=0)"
    )
  from colorgan.training import phases  # pylint: disable=g-import-not-at-top  (jax: when checked)

  phases.check(config)
  if config.loss.feature_matching_weight and config.loss.gan == "none":
    raise errors.ConfigError(
      "config.loss.feature_matching_weight > 0 matches the discriminator's features, but "
      "config.loss.gan is 'none': set a GAN objective or feature_matching_weight=0"
    )

  init_from = config.model.init_from
  if init_from:
    if config.model.generator != "resnet_unet":
      raise errors.ConfigError(
        "config.model.init_from loads a ResNet encoder, but "
        f"config.model.generator={config.model.generator!r} has none: use "
        "resnet_unet or clear init_from"
      )
    if not (init_from.endswith(".npz") and os.path.isfile(init_from) or os.path.isdir(init_from)):
      raise errors.ConfigError(
        f"config.model.init_from={init_from} is neither a .npz file nor a "
        "directory (an orbax checkpoint or a colorgan workdir)"
      )
  start = config.init_generator_from
  if start:
    if init_from:
      raise errors.ConfigError(
        "config.init_generator_from and config.model.init_from are both "
        "set: the generator's weights come from one of them, clear the "
        "other"
      )
    if not os.path.isdir(os.path.join(start, "checkpoints")):
      raise errors.ConfigError(
        f"config.init_generator_from={start} holds no checkpoints/: point "
        "it at the workdir of a finished run (e.g. of "
        "configs/pretrain_l1.py)"
      )


def _validate_hints(config: ml_collections.ConfigDict) -> None:
  """config.hints.* and config.eval.hint_counts (README "Color hints")."""
  hints = config.hints
  if not isinstance(hints.enabled, bool):
    raise errors.ConfigError(f"config.hints.enabled={hints.enabled!r} must be True or False")
  if not isinstance(hints.p, (int, float)) or not 0 < hints.p <= 1:
    raise errors.ConfigError(
      f"config.hints.p={hints.p!r} must be in (0, 1]: the geometric "
      "distribution's success probability (mean 1/p points per image)"
    )
  if not isinstance(hints.no_hint_share, (int, float)) or not 0 <= hints.no_hint_share <= 1:
    raise errors.ConfigError(
      f"config.hints.no_hint_share={hints.no_hint_share!r} must be in [0, 1]"
    )
  for key in ("max_points", "min_patch_size", "max_patch_size"):
    value = hints[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise errors.ConfigError(f"config.hints.{key}={value!r} must be a whole number >= 1")
  if hints.min_patch_size > hints.max_patch_size:
    raise errors.ConfigError(
      f"config.hints.min_patch_size={hints.min_patch_size} is larger than "
      f"max_patch_size={hints.max_patch_size}"
    )
  if hints.max_patch_size > config.image_size:
    raise errors.ConfigError(
      f"config.hints.max_patch_size={hints.max_patch_size} is larger than "
      f"image_size={config.image_size}"
    )
  if not isinstance(hints.center_sigma, (int, float)) or hints.center_sigma < 0:
    raise errors.ConfigError(
      f"config.hints.center_sigma={hints.center_sigma!r} must be >= 0 (0: uniform locations)"
    )
  counts = config.eval.hint_counts
  if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
    raise errors.ConfigError(
      f"config.eval.hint_counts={counts!r} must be whole numbers >= 0, e.g. '(0,1,2,5,10,20,50)'"
    )
  if counts and not hints.enabled:
    raise errors.ConfigError(
      f"config.eval.hint_counts={tuple(counts)!r} needs a generator trained "
      "with hints (config.hints.enabled=True); this run's takes none"
    )
