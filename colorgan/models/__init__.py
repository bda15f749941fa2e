"""Generator and discriminator registries: a config name -> a Flax module."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections

from colorgan import hints
from colorgan.models import ab_bins
from colorgan.models.patchgan import PatchGAN
from colorgan.models.resnet_unet import ResNetUNet
from colorgan.models.unet import UNetGenerator

FAST_LAYERS = ("auto", True, False)  # the values config.model.fast_layers takes


def unet_num_downs(image_size: int) -> int:
  """U-Net depth for an image size: log2(size), so the bottleneck is 1x1 (unet_256 -> 8)."""
  return int(round(math.log2(image_size)))


def use_fast_layers(config: ml_collections.ConfigDict, backend: str | None = None) -> bool:
  """config.model.fast_layers resolved: whether the 4x4 convs are matrix products (models/layers.py).

  "auto" picks them on CPU only: they exist because XLA:CPU's convolutions are slow, and they copy
  each input up to 16 times (im2col), which cuDNN's and XLA:TPU's own convolutions do not need.

  Args:
    config: a validated config.
    backend: "cpu", "gpu" or "tpu"; None: jax.default_backend() (this starts the backend).
  """
  value = config.model.fast_layers
  if value == "auto":
    return (backend or jax.default_backend()) == "cpu"
  return bool(value)


def _unet(config: ml_collections.ConfigDict, dtype, fast_layers: bool):
  classifier = is_classification(config)
  return UNetGenerator(
    num_downs=config.model.num_downs or unet_num_downs(config.image_size),
    base_features=config.model.g_base_features,
    out_channels=ab_bins.num_bins() if classifier else 2,
    logits=classifier,
    dropout_rate=config.model.dropout_rate,
    dtype=dtype,
    fast_layers=fast_layers,
    use_hints=hints.enabled(config),
  )


def _resnet_unet(config: ml_collections.ConfigDict, dtype, fast_layers: bool):
  del fast_layers  # flax's layers throughout
  return ResNetUNet(
    depth=config.model.resnet_depth,
    width=config.model.g_base_features,
    ab_bound=config.model.ab_bound,
    dtype=dtype,
    use_hints=hints.enabled(config),
  )


def is_classification(config: ml_collections.ConfigDict) -> bool:
  """Whether the generator predicts ab bins (config.model.ab_head; a saved config without the key
  predates the head: a regressor)."""
  return config.model.get("ab_head", "regression") == "classification"


# name -> (config, dtype, fast_layers) -> module; fast_layers is use_fast_layers(config) resolved.
# A generator takes L and optional hints, `__call__(l, hints=None, *, train)`, and with
# config.hints.enabled a hint map beside L (colorgan/hints.py; None: no hint).
GENERATORS = {"unet": _unet, "resnet_unet": _resnet_unet}


# With hints, D is conditioned on them as well as on L: concat(L, ab, hints), as pix2pix conditions
# D on the generator's whole input, so that it judges whether the colors fit what G was given. A D
# blind to the hints rewards vivid colors whatever the hints say: hinted results then came out too
# colorful, more so with every hint, and PSNR fell past 20 points (README "Color hints").
def _patchgan(config: ml_collections.ConfigDict, dtype, fast_layers: bool):
  return PatchGAN(
    base_features=config.model.d_base_features,
    n_layers=config.model.d_layers,
    dtype=dtype,
    fast_layers=fast_layers,
    use_hints=hints.enabled(config),
    spectral_norm=config.model.d_spectral_norm,
  )


DISCRIMINATORS = {"patchgan": _patchgan}


def create_generator(
  config: ml_collections.ConfigDict, backend: str | None = None, *, fast_layers: bool | None = None
):
  """The config's generator; `backend` as use_fast_layers (None: the default backend), unless
  `fast_layers` says which layers to use."""
  if fast_layers is None:
    fast_layers = use_fast_layers(config, backend)
  return GENERATORS[config.model.generator](config, jnp.dtype(config.compute_dtype), fast_layers)


def create_discriminator(config: ml_collections.ConfigDict, backend: str | None = None):
  """The config's discriminator; `backend` as use_fast_layers (None: the default backend)."""
  return DISCRIMINATORS[config.model.discriminator](
    config, jnp.dtype(config.compute_dtype), use_fast_layers(config, backend)
  )


def predict_ab(
  generator,
  variables: dict,
  l: jax.Array,
  hints: jax.Array | None = None,
  *,
  chroma_gain: float = 1.0,
  temperature=1.0,
) -> jax.Array:
  """The generator in inference mode (BatchNorm running statistics, no dropout): every caller that
  colorizes (samples, evaluation, colorize, export) goes through here.

  Args:
    generator: a module from create_generator.
    variables: {"params": ..., "batch_stats": ...} (the EMA's, where the run keeps one).
    l: [B, H, W, 1] scaled lightness (color.scale_l).
    hints: [B, H, W, 3] hint map for a generator trained with hints; None: no hint given.
    chroma_gain: ab times this (the vividness knob of a plain regressor, models.vividness); 1.0
      leaves the generator's output as it is.
    temperature: a classification head's annealed mean, softmax(logits / T) over the bins (1: the
      mean; may be traced); a regressor ignores it.

  Returns:
    ab: [B, H, W, 2] at model scale (color.unscale_ab gives Lab units).
  """
  ab = generator.apply(variables, l, hints, train=False)
  if getattr(generator, "logits", False):
    ab = ab_bins.decode(ab, temperature)
  return ab if chroma_gain == 1.0 else ab * chroma_gain


def abstract_variables(generator, image_size: int) -> dict:
  """The generator's {"params", "batch_stats"} as shapes only (jax.eval_shape: nothing allocated)."""
  l = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
  abstract = jax.eval_shape(functools.partial(generator.init, train=False), jax.random.key(0), l)
  return {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}


def summarize(config: ml_collections.ConfigDict) -> tuple[str, dict]:
  """Both networks' parameters (shapes only: nothing is allocated), for --mode=summary.

  Args:
    config: a validated config.

  Returns:
    (text, sizes): the parameter tables of the generator and the discriminator, printable, and a
    JSON-able dict of their sizes, the discriminator's logits shape and the layers in use.
  """
  from clu import parameter_overview  # pylint: disable=g-import-not-at-top  (clu: only when asked)

  generator, discriminator = create_generator(config), create_discriminator(config)
  size = config.image_size
  l = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
  ab = jax.ShapeDtypeStruct((1, size, size, 2), jnp.float32)
  g_vars = abstract_variables(generator, size)
  d_vars = jax.eval_shape(
    functools.partial(discriminator.init, train=False), jax.random.key(0), l, ab
  )
  logits = jax.eval_shape(functools.partial(discriminator.apply, train=False), d_vars, l, ab)
  tables = []
  for name, module, variables in (
    ("Generator", generator, g_vars),
    ("Discriminator", discriminator, d_vars),
  ):
    tables.append(f"{name} ({type(module).__name__}):")
    tables.append(
      parameter_overview.get_parameter_overview(variables["params"], include_stats=False)
    )
  count = lambda tree: sum(int(x.size) for x in jax.tree.leaves(tree))  # noqa: E731
  return "\n".join(tables), {
    "generator": config.model.generator,
    "generator_params": count(g_vars["params"]),
    "discriminator": config.model.discriminator,
    "discriminator_params": count(d_vars["params"]),
    "discriminator_logits_shape": list(logits.shape[1:3]),
    "image_size": size,
    # configuration.generator_depth (which imports this package: not imported here)
    "unet_num_downs": config.model.num_downs or unet_num_downs(size),
    "fast_layers": use_fast_layers(config),  # config.model.fast_layers on this backend
    "backend": jax.default_backend(),
  }
