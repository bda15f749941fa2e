"""The fast layers (config.model.fast_layers) against flax's nn.Conv / nn.ConvTranspose.

The matrix-product layers must be the same functions of the same parameters, so that a checkpoint
moves freely between the two paths: the fast layer (or network) declares the variables of the flax
reference, inits them to the same values, and with the reference's variables gives the same outputs
and gradients (float32 up to rounding), down to one whole train step.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorgan import configuration
from colorgan import errors
from colorgan import models
from colorgan import parallel
from colorgan.training import step as step_lib
from colorgan.models import layers
from tests.conftest import tiny_config


def _assert_close(got, want, tol=1e-5, what=""):
  """Elementwise close, with the absolute part relative to the reference's magnitude."""
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  assert got.shape == want.shape, (what, got.shape, want.shape)
  scale = float(np.abs(want).max()) if want.size else 0.0
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale + 1e-12, err_msg=what)


def _assert_trees_close(got, want, tol=1e-5):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    _assert_close(g, w, tol, what=jax.tree_util.keystr(path))


def _assert_same_declarations(got, want):
  """The same tree, names, shapes and dtypes (a checkpoint of one restores into the other)."""
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
  assert shapes(got) == shapes(want)


def _declarations(module, *inputs, **kwargs):
  """The variables module.init would create, as shapes (no computation, no compilation)."""
  return jax.eval_shape(functools.partial(module.init, **kwargs), jax.random.key(0), *inputs)


def _random_values(declarations, seed):
  """Values of a typical size for every variable (init leaves biases zero, hiding a wrong bias).

  numpy, not jax.random: each new shape would cost a compilation.
  """
  rng = np.random.default_rng(seed)

  def value(path, leaf):
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    name = path[-1].key
    if name == "kernel":  # He scale: activations keep their size through the networks
      return noise * np.float32(np.sqrt(2.0 / np.prod(leaf.shape[:-1])))
    if name == "scale":
      return 1.0 + 0.1 * noise
    if name == "var":
      return np.exp(0.2 * noise)
    return 0.1 * noise  # bias, BatchNorm mean

  return jax.tree_util.tree_map_with_path(value, declarations)


def _normal(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- the layers
@functools.partial(jax.jit, static_argnums=(0, 1))
def _layer_results(fast, reference, variables, x, cotangent):
  """Per layer (fast first): its output and the gradients of <cotangent, output> w.r.t. the
  variables and the input."""
  results = []
  for module in (fast, reference):
    y, pull_back = jax.vjp(lambda v, x, m=module: m.apply(v, x), variables, x)
    results.append((y, pull_back(cotangent.astype(y.dtype))))
  return results


def _compare(fast, reference, x, *, seed=0):
  """The same declarations; with the reference's variables, the same outputs and gradients."""
  declared = _declarations(reference, x)
  _assert_same_declarations(_declarations(fast, x), declared)
  variables = _random_values(declared, seed)
  cotangent = _normal(seed + 1, jax.eval_shape(reference.apply, variables, x).shape)
  (y, (grads_v, grads_x)), (y_ref, (ref_v, ref_x)) = _layer_results(
    fast, reference, variables, x, cotangent
  )
  assert y.dtype == y_ref.dtype == jnp.float32
  _assert_close(y, y_ref, what="output")
  _assert_trees_close(grads_v, ref_v)
  _assert_close(grads_x, ref_x, what="input gradient")


def _conv_reference(features, strides, use_bias, dtype=jnp.float32):
  return nn.Conv(
    features,
    (4, 4),
    strides=(strides, strides),
    padding=((1, 1), (1, 1)),
    use_bias=use_bias,
    kernel_init=layers.conv_init,
    dtype=dtype,
  )


def _conv_transpose_reference(features, use_bias, dtype=jnp.float32):
  return nn.ConvTranspose(
    features,
    (4, 4),
    strides=(2, 2),
    padding=((2, 2), (2, 2)),
    use_bias=use_bias,
    kernel_init=layers.conv_init,
    dtype=dtype,
  )


# (batch, height, width, in channels, features, use_bias): outputs 1x1 to 7x7, odd and non-square.
CONV_CASES = [
  (1, 2, 2, 3, 4, False),
  (2, 4, 4, 2, 8, True),
  (1, 8, 8, 3, 1, True),
  (2, 5, 5, 4, 3, False),
  (1, 3, 6, 2, 5, True),
]


@pytest.mark.parametrize("output_side", [False, True])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("batch, height, width, channels, features, use_bias", CONV_CASES)
def test_matmul_conv_is_flax_conv(
  batch, height, width, channels, features, strides, use_bias, output_side
):
  fast = layers.down_conv(
    features, strides=strides, use_bias=use_bias, dtype=jnp.float32, fast=True
  )
  assert isinstance(fast, layers.MatmulConv)
  assert (fast.kernel_size, fast.strides, fast.pad) == (4, strides, 1)
  x = _normal(height * width + channels, (batch, height, width, channels))
  _compare(fast.clone(output_side=output_side), _conv_reference(features, strides, use_bias), x)


def _conv_runs_output_side(conv, x):
  """Whether the conv took the output-side formulation: its product has n * n * F columns."""
  variables = jax.eval_shape(conv.init, jax.random.key(0), x)
  (dot,) = _dot_generals(jax.make_jaxpr(conv.apply)(variables, x).jaxpr)
  return dot.outvars[0].aval.shape[-1] != conv.features


def test_the_networks_convs_pick_both_formulations():
  """At 128 px the first down layers past the stem and the PatchGAN logits take the output side;
  the stems (1 and 3 channels) and the deep layers take im2col."""

  def picks(features, strides, input_shape):
    conv = layers.down_conv(features, strides=strides, use_bias=False, dtype=jnp.float32, fast=True)
    return _conv_runs_output_side(conv, jnp.zeros(input_shape))

  assert picks(128, 2, (16, 64, 64, 64))  # the U-Net's down1 / PatchGAN's conv1 at 128 px
  assert picks(1, 1, (16, 15, 15, 512))  # PatchGAN logits
  assert not picks(64, 2, (16, 128, 128, 1))  # the U-Net's stem
  assert not picks(512, 2, (16, 16, 16, 256))  # deep: the border of extra blocks costs more
  assert not picks(512, 1, (16, 16, 16, 256))  # PatchGAN's stride-1 conv: 512 features


def test_down_conv_plain_path_is_the_flax_reference():
  for strides in (1, 2):
    conv = layers.down_conv(6, strides=strides, use_bias=True, dtype=jnp.float32, fast=False)
    assert isinstance(conv, nn.Conv) and not isinstance(conv, layers.MatmulConv)
    x = _normal(0, (1, 6, 6, 2))
    variables = _random_values(_declarations(conv, x), 1)
    np.testing.assert_array_equal(
      conv.apply(variables, x), _conv_reference(6, strides, True).apply(variables, x)
    )


# The transposed conv's formulations, picked by shape: one product with all 16 taps (the kernel
# flipped when there are more pixels than input channels, else the product), or one (batched)
# product per tap when there are few pixels for many features.
# (batch, height, width, in channels, features, use_bias): 1x1 to 8x8 inputs, non-square and odd
# ones, few pixels for many features (per-tap territory) and the other way round.
UP_CASES = [
  (1, 1, 1, 3, 2, True),
  (2, 1, 1, 4, 16, False),
  (1, 2, 2, 8, 16, True),
  (2, 2, 2, 3, 4, False),
  (1, 4, 4, 4, 8, False),
  (2, 8, 8, 2, 3, True),
  (1, 3, 6, 5, 6, True),
  (1, 3, 2, 4, 16, False),
  (1, 5, 5, 3, 64, True),
  (1, 2, 2, 8, 4, True),
]


def _fast_up_conv(features, use_bias, dtype):
  conv = layers.up_conv(features, use_bias=use_bias, dtype=dtype, fast=True)
  assert isinstance(conv, layers.MatmulConvTranspose)
  return conv


def _dot_generals(jaxpr):
  """Every dot_general equation in a jaxpr, nested jaxprs (jnp.dot is a jit) included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, "eqns"):
          found += _dot_generals(sub)
  return found


def _formulation(conv, x):
  """Which of the transposed conv's formulations ran: "per tap" (a batched product), or one product
  with the kernel flipped ("flip kernel") or the product flipped ("flip product")."""
  variables = jax.eval_shape(conv.init, jax.random.key(0), x)
  jaxpr = jax.make_jaxpr(conv.apply)(variables, x).jaxpr
  (dot,) = _dot_generals(jaxpr)
  (_, _), (batch_dims, _) = dot.params["dimension_numbers"]
  if batch_dims:
    return "per tap"
  (flip,) = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "rev"]
  return (
    "flip kernel"
    if flip.invars[0].aval.shape == (4, 4, x.shape[-1], conv.features)
    else ("flip product")
  )


@pytest.mark.parametrize("batch, height, width, channels, features, use_bias", UP_CASES)
def test_matmul_conv_transpose_is_flax_conv_transpose(
  batch, height, width, channels, features, use_bias
):
  fast = _fast_up_conv(features, use_bias, jnp.float32)
  x = _normal(height * width + channels, (batch, height, width, channels))
  _compare(fast, _conv_transpose_reference(features, use_bias), x)


def test_conv_transpose_cases_run_every_formulation():
  """The cases above reach every code path of the transposed conv (else they test less)."""
  paths = {
    _formulation(
      _fast_up_conv(features, False, jnp.float32), jnp.zeros((batch, height, width, channels))
    )
    for batch, height, width, channels, features, _ in UP_CASES
  }
  assert paths == {"per tap", "flip kernel", "flip product"}


def test_up_conv_plain_path_is_the_flax_reference():
  conv = layers.up_conv(5, use_bias=True, dtype=jnp.float32, fast=False)
  assert isinstance(conv, nn.ConvTranspose)
  x = _normal(0, (2, 3, 4, 3))
  variables = _random_values(_declarations(conv, x), 1)
  np.testing.assert_array_equal(
    conv.apply(variables, x), _conv_transpose_reference(5, True).apply(variables, x)
  )


def test_fast_layers_init_to_the_flax_values():
  """The same key gives the same initial values: the same names, shapes and initializers."""
  x = _normal(0, (1, 4, 4, 3))
  pairs = [
    (
      layers.down_conv(5, strides=s, use_bias=b, dtype=jnp.float32, fast=True),
      _conv_reference(5, s, b),
    )
    for s, b in ((1, True), (2, False))
  ]
  pairs += [
    (_fast_up_conv(6, b, jnp.float32), _conv_transpose_reference(6, b)) for b in (True, False)
  ]
  for fast, reference in pairs:
    expected = reference.init(jax.random.key(3), x)
    got = fast.init(jax.random.key(3), x)
    _assert_same_declarations(got, expected)
    jax.tree.map(np.testing.assert_array_equal, got, expected)
    assert 0.01 < float(jnp.std(expected["params"]["kernel"])) < 0.03  # pix2pix's N(0, 0.02)


@pytest.mark.parametrize("kind", ["conv", "conv_transpose"])
def test_bfloat16_outputs_match_flax(kind):
  x = _normal(0, (2, 8, 8, 6))
  if kind == "conv":
    fast = layers.down_conv(16, use_bias=True, dtype=jnp.bfloat16, fast=True)
    reference = _conv_reference(16, 2, True, jnp.bfloat16)
  else:
    fast = _fast_up_conv(16, True, jnp.bfloat16)
    reference = _conv_transpose_reference(16, True, jnp.bfloat16)
  declared = _declarations(reference, x)
  _assert_same_declarations(_declarations(fast, x), declared)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(declared))  # params stay float32
  variables = _random_values(declared, 1)
  y, y_ref = fast.apply(variables, x), reference.apply(variables, x)
  assert y.dtype == y_ref.dtype == jnp.bfloat16
  _assert_close(y, y_ref, tol=4e-2)
  # And both are the float32 function up to bfloat16 rounding.
  y32 = (
    _conv_reference(16, 2, True).apply(variables, x)
    if kind == "conv"
    else (_conv_transpose_reference(16, True).apply(variables, x))
  )
  _assert_close(y, y32, tol=4e-2)


# ----------------------------------------------------------------------------- the networks
def _config(fast, **overrides):
  return tiny_config(**{"model.fast_layers": fast, **overrides})


def test_auto_is_the_matrix_products_on_cpu_and_flax_convolutions_on_gpu_and_tpu():
  assert tiny_config().model.fast_layers == "auto"  # the default
  assert jax.default_backend() == "cpu"
  auto = _config("auto")
  assert models.use_fast_layers(auto) is True  # this backend
  assert [models.use_fast_layers(auto, b) for b in ("cpu", "gpu", "tpu")] == [True, False, False]
  for value in (True, False):  # an explicit value holds on every backend
    assert {models.use_fast_layers(_config(value), b) for b in ("cpu", "gpu", "tpu")} == {value}
  # Both networks are built with the resolved value (the ResNet U-Net has flax's layers only).
  for backend, fast in ((None, True), ("cpu", True), ("gpu", False), ("tpu", False)):
    assert models.create_generator(auto, backend).fast_layers is fast
    assert models.create_discriminator(auto, backend).fast_layers is fast
  assert models.create_generator(_config(True, **{"model.generator": "resnet_unet"}), "cpu")


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, ""])
def test_other_fast_layers_values_are_one_line_errors(value):
  config = _config(value)
  with pytest.raises(errors.ConfigError) as e:
    configuration.validate(config)
  assert str(e.value) == (
    f"config.model.fast_layers={value!r} is not known: choose auto (matrix "
    "products on CPU, flax's convolutions on GPU/TPU), True or False"
  )
  for good in ("auto", True, False):
    configuration.validate(_config(good))


@pytest.mark.parametrize(
  "size, g_params, d_params",
  [
    (256, 54_409_858, 2_765_633),  # pix2pix unet_256 and the 70x70 PatchGAN
    (32, None, None),  # the tiny config: the same count on both paths
  ],
)
def test_parameter_counts_do_not_depend_on_the_path(size, g_params, d_params):
  counts = {}
  for fast in (False, True):
    config = _config(
      fast,
      image_size=size,
      **({"model.g_base_features": 64, "model.d_base_features": 64} if g_params else {}),
    )
    l = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
    ab = jax.ShapeDtypeStruct((1, size, size, 2), jnp.float32)
    g = jax.eval_shape(
      functools.partial(models.create_generator(config).init, train=False), jax.random.key(0), l
    )
    d = jax.eval_shape(
      functools.partial(models.create_discriminator(config).init, train=False),
      jax.random.key(0),
      l,
      ab,
    )
    counts[fast] = tuple(sum(int(x.size) for x in jax.tree.leaves(v["params"])) for v in (g, d))
  assert counts[True] == counts[False]
  if g_params:
    assert counts[True] == (g_params, d_params)


@pytest.fixture(scope="module")
def networks():
  """Generator and discriminator of both paths (64 px: U-Net depth 6, so one dropout block)."""
  config = {
    fast: _config(fast, image_size=64, **{"model.g_base_features": 4, "model.d_base_features": 4})
    for fast in (False, True)
  }
  assert models.unet_num_downs(64) == 6
  g = {fast: models.create_generator(c) for fast, c in config.items()}
  d = {fast: models.create_discriminator(c) for fast, c in config.items()}
  assert g[True].fast_layers and not g[False].fast_layers
  assert d[True].fast_layers and not d[False].fast_layers
  rng = np.random.default_rng(0)
  l = rng.uniform(-1, 1, (2, 64, 64, 1)).astype(np.float32)
  ab = rng.uniform(-0.5, 0.5, (2, 64, 64, 2)).astype(np.float32)
  return {"g": (g, (l,), _variables(g, l)), "d": (d, (l, ab), _variables(d, l, ab))}


def _variables(modules, *inputs):
  """The reference's declarations (the fast path declares the same), with random values.

  (test_fast_layers_init_to_the_flax_values checks that equal declarations init to equal values.)
  """
  declared = _declarations(modules[False], *inputs, train=False)
  _assert_same_declarations(_declarations(modules[True], *inputs, train=False), declared)
  assert set(declared) == {"params", "batch_stats"}
  return _random_values(declared, 4)


@functools.partial(jax.jit, static_argnums=0)
def _train_mode(module, variables, inputs, dropout_key):
  """Training-mode output, new BatchNorm statistics, and the gradient of <cotangent, output>."""

  def run(params):
    out, updates = module.apply(
      {**variables, "params": params},
      *inputs,
      train=True,
      rngs={"dropout": dropout_key},
      mutable=["batch_stats"],
    )
    return out, updates["batch_stats"]

  out, pull_back, stats = jax.vjp(run, variables["params"], has_aux=True)
  cotangent = jax.random.normal(jax.random.key(5), out.shape, out.dtype)
  return out, stats, pull_back(cotangent)[0]


@functools.partial(jax.jit, static_argnums=0)
def _eval_mode(module, variables, inputs):
  return module.apply(variables, *inputs, train=False)


@pytest.mark.parametrize("network", ["g", "d"])
def test_network_matches_the_flax_path(networks, network):
  """Outputs (training and inference mode), new BatchNorm statistics and parameter gradients."""
  modules, inputs, variables = networks[network]
  key = jax.random.key(7)
  fast, ref = (_train_mode(modules[f], variables, inputs, key) for f in (True, False))
  for got, want in zip(fast, ref):  # output, batch_stats, params gradient
    _assert_trees_close(got, want)
  assert float(jnp.abs(ref[0]).max()) > 0.05  # outputs that say something
  assert set(ref[1]) == set(variables["batch_stats"])
  y, y_ref = (_eval_mode(modules[f], variables, inputs) for f in (True, False))
  _assert_close(y, y_ref, what="inference output")
  assert not np.allclose(y_ref, ref[0], atol=1e-3)  # inference is not the training-mode function


def test_generator_dropout_is_drawn_identically(networks):
  """Dropout on (depth 6): two rngs give two outputs, one rng the same output on both paths."""
  modules, inputs, variables = networks["g"]
  out = lambda fast, seed: _train_mode(  # noqa: E731
    modules[fast], variables, inputs, jax.random.key(seed)
  )[0]
  assert not np.allclose(out(False, 8), out(False, 7), atol=1e-3)
  _assert_close(out(True, 8), out(False, 8))


# ----------------------------------------------------------------------------- a train step
def test_train_step_matches_the_flax_path():
  """One joint G and D step (make_train_step) from one state: the same metrics and new state."""
  mesh = parallel.create_mesh()
  configs = {fast: _config(fast, batch_size=2) for fast in (False, True)}
  config = configs[False]
  size = config.image_size
  images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
  results = {}
  with jax.set_mesh(mesh):
    g, d = models.create_generator(config), models.create_discriminator(config)
    initial = jax.device_get(step_lib.init_train_state(config, g, d, mesh))
    batch = parallel.global_batch(mesh, {"image": images})
    for fast, c in configs.items():
      step = step_lib.make_train_step(
        c, models.create_generator(c), models.create_discriminator(c), mesh
      )
      # A fresh copy each time: the step donates its state (the rng key stays a jax.Array).
      fresh = jax.device_put(jax.tree.map(lambda x: x.copy(), initial), parallel.replicated(mesh))
      state, metrics = step(fresh, batch)
      results[fast] = jax.device_get(state), {k: float(v) for k, v in metrics.compute().items()}
  (fast_state, fast_metrics), (ref_state, ref_metrics) = results[True], results[False]
  assert int(fast_state.step) == int(ref_state.step) == 1
  assert set(fast_metrics) == set(step_lib.METRIC_NAMES)
  for name, value in ref_metrics.items():
    np.testing.assert_allclose(fast_metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
  _assert_trees_close(fast_state.g_batch_stats, ref_state.g_batch_stats)
  # Adam's first step moves each weight by about lr * sign(gradient): compare the moves, to a small
  # fraction of the learning rate (a near-zero gradient may round to either sign).
  for name, lr in (
    ("g_params", config.optim.g_learning_rate),
    ("d_params", config.optim.d_learning_rate),
  ):
    moves = [
      (np.asarray(f) - i, np.asarray(r) - i)
      for f, r, i in zip(
        jax.tree.leaves(getattr(fast_state, name)),
        jax.tree.leaves(getattr(ref_state, name)),
        jax.tree.leaves(getattr(initial, name)),
      )
    ]
    diff = np.concatenate([np.ravel(f - r) for f, r in moves])
    assert np.abs(diff).mean() < 1e-3 * lr, name
    assert np.mean(np.abs(diff) > 0.01 * lr) < 1e-3, name
    assert np.abs(np.concatenate([np.ravel(r) for _, r in moves])).mean() > 0.2 * lr, name  # moved
