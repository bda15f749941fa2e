"""The ResNet U-Net generator: sizes, output bound, a training step, and pretrained encoder weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from colorgan import checkpointing
from colorgan import configuration
from colorgan import errors
from colorgan import main
from colorgan import models
from colorgan import parallel
from colorgan.training import step as step_lib
from colorgan.training import warm_start
from colorgan.models import resnet_unet
from tests.conftest import tiny_config

W = 8  # tiny ResNet width for the tests that run it


def _count(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("depth, torchvision_params", [(18, 11_689_512), (34, 21_797_672)])
def test_encoder_has_torchvision_resnet_parameter_count(depth, torchvision_params):
  # torchvision's published counts, minus the 512 * 1000 + 1000 fc layer and 2 of the stem's 3 input
  # channels (64 * 2 * 7 * 7).
  expected = torchvision_params - 513_000 - 64 * 2 * 49
  variables = models.abstract_variables(resnet_unet.ResNetUNet(depth=depth), 64)
  assert _count(variables["params"]["encoder"]) == expected


def test_summary_reports_the_resnet_unet_parameter_count():
  config = tiny_config(
    **{
      "model.generator": "resnet_unet",
      "image_size": 64,
      "model.g_base_features": 64,
      "data.load_size": 72,
    }
  )
  configuration.validate(config)
  summary = main.summary(config)
  # Decoder by hand: each UpBlock(f) on cin input channels with a cs-channel skip has three 3x3
  # convs without bias (cin->f, f+cs->f, f->f), each followed by a BatchNorm (2f); then a 1x1 conv.
  w = 64
  blocks = [(8 * w, 4 * w, 4 * w), (4 * w, 2 * w, 2 * w), (2 * w, w, w), (w, w, w), (w, 1, w // 2)]
  decoder = sum(9 * (cin * f + (f + cs) * f + f * f) + 3 * 2 * f for cin, cs, f in blocks)
  decoder += (w // 2) * 2 + 2
  assert summary["generator"] == "resnet_unet"
  assert summary["generator_params"] == 11_689_512 - 513_000 - 6_272 + decoder


def test_feature_map_and_output_shapes():
  encoder = resnet_unet.ResNetEncoder(width=W)
  l = jax.ShapeDtypeStruct((2, 64, 64, 1), jnp.float32)
  variables = jax.eval_shape(functools.partial(encoder.init, train=False), jax.random.key(0), l)
  features = jax.eval_shape(functools.partial(encoder.apply, train=False), variables, l)
  assert [f.shape for f in features] == [
    (2, 32, 32, W),
    (2, 16, 16, W),
    (2, 8, 8, 2 * W),
    (2, 4, 4, 4 * W),
    (2, 2, 2, 8 * W),
  ]
  generator = resnet_unet.ResNetUNet(width=W)
  variables = models.abstract_variables(generator, 64)
  ab = jax.eval_shape(functools.partial(generator.apply, train=False), variables, l)
  assert ab.shape == (2, 64, 64, 2) and ab.dtype == jnp.float32
  with pytest.raises(ValueError, match="multiples of 32"):
    jax.eval_shape(
      functools.partial(generator.apply, train=False),
      variables,
      jax.ShapeDtypeStruct((1, 48, 40, 1), jnp.float32),
    )


@pytest.fixture(scope="module")
def resnet_setup():
  config = tiny_config(**{"model.generator": "resnet_unet", "model.g_base_features": W})
  configuration.validate(config)
  mesh = parallel.create_mesh()
  generator, discriminator = models.create_generator(config), models.create_discriminator(config)
  # One compiled initializer for every test here (they differ only in what warm_start reads).
  init = jax.jit(
    functools.partial(step_lib.create_train_state, config, generator, discriminator),
    out_shardings=parallel.replicated(mesh),
  )
  with jax.set_mesh(mesh):
    initial = jax.device_get(init(jax.random.key(config.seed)))
  return config, mesh, generator, discriminator, init, initial


def test_output_stays_inside_ab_bound(resnet_setup):
  *_, initial = resnet_setup
  generator = resnet_unet.ResNetUNet(width=W, ab_bound=0.25)
  l = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 1)), jnp.float32)
  # Scale the last conv so that the tanh saturates: the bound must still hold.
  params = jax.tree.map(lambda x: x, initial.g_params)
  params["to_ab"]["kernel"] = params["to_ab"]["kernel"] * 1e4
  ab = jax.jit(functools.partial(generator.apply, train=False))(
    {"params": params, "batch_stats": initial.g_batch_stats}, l
  )
  assert float(jnp.max(jnp.abs(ab))) <= 0.25
  assert float(jnp.max(jnp.abs(ab))) > 0.24


def test_train_step_updates_every_generator_weight(resnet_setup):
  config, mesh, generator, discriminator, init, initial = resnet_setup
  batch = {"image": np.random.RandomState(0).randint(0, 256, (4, 32, 32, 3)).astype(np.uint8)}
  with jax.set_mesh(mesh):
    step_fn = step_lib.make_train_step(config, generator, discriminator, mesh)
    state, metrics = step_fn(init(jax.random.key(config.seed)), parallel.global_batch(mesh, batch))
  scalars = {k: float(v) for k, v in metrics.compute().items()}
  assert all(np.isfinite(v) for v in scalars.values()), scalars
  assert scalars["d_loss"] > 0 and scalars["g_recon"] > 0
  before = jax.tree.leaves(initial.g_params)
  after = jax.tree.leaves(jax.device_get(state.g_params))
  assert all(not np.array_equal(a, b) for a, b in zip(before, after))


def _fake_torchvision_state_dict(rng, width, stages=(2, 2, 2, 2)):
  """torchvision ResNet names and [O, I, kH, kW] shapes, written out from the architecture."""
  sd = {"conv1.weight": rng.randn(width, 3, 7, 7)}

  def bn(prefix, c):
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      sd[f"{prefix}.{leaf}"] = rng.rand(c) + 0.5
    sd[f"{prefix}.num_batches_tracked"] = np.array(7)

  bn("bn1", width)
  cin = width
  for s, blocks in enumerate(stages):
    c = width * 2**s
    for b in range(blocks):
      p = f"layer{s + 1}.{b}"
      sd[f"{p}.conv1.weight"] = rng.randn(c, cin if b == 0 else c, 3, 3)
      bn(f"{p}.bn1", c)
      sd[f"{p}.conv2.weight"] = rng.randn(c, c, 3, 3)
      bn(f"{p}.bn2", c)
      if b == 0 and s > 0:
        sd[f"{p}.downsample.0.weight"] = rng.randn(c, cin, 1, 1)
        bn(f"{p}.downsample.1", c)
    cin = c
  sd["fc.weight"], sd["fc.bias"] = rng.randn(1000, cin), rng.randn(1000)
  return {k: v.astype(np.float32) for k, v in sd.items()}


def _encoder(tree):
  return {c: t["encoder"] for c, t in tree.items()}


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _warm(config, mesh, init):
  with jax.set_mesh(mesh):
    return jax.device_get(warm_start.apply(config, init(jax.random.key(config.seed)), mesh))


def test_init_from_torchvision_npz(resnet_setup, tmp_path):
  config, mesh, _, _, init, initial = resnet_setup
  sd = _fake_torchvision_state_dict(np.random.RandomState(1), W)
  path = str(tmp_path / "resnet18.npz")
  np.savez(path, **sd)
  config = config.copy_and_resolve_references()
  config.model.init_from = path
  configuration.validate(config)
  state = _warm(config, mesh, init)
  enc, stats = state.g_params["encoder"], state.g_batch_stats["encoder"]
  # Conv [O, I, kH, kW] -> [kH, kW, I, O]; the RGB stem summed over its input channels.
  np.testing.assert_array_equal(
    enc["stem_conv"]["kernel"], sd["conv1.weight"].transpose(2, 3, 1, 0).sum(2, keepdims=True)
  )
  np.testing.assert_array_equal(
    enc["layer2_0"]["downsample_conv"]["kernel"],
    sd["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(enc["layer3_1"]["bn2"]["scale"], sd["layer3.1.bn2.weight"])
  np.testing.assert_array_equal(
    stats["layer4_0"]["downsample_bn"]["var"], sd["layer4.0.downsample.1.running_var"]
  )
  np.testing.assert_array_equal(stats["stem_bn"]["mean"], sd["bn1.running_mean"])
  # The decoder and the discriminator keep their fresh initialization.
  _assert_trees_equal(state.g_params["up0"], initial.g_params["up0"])
  _assert_trees_equal(state.d_params, initial.d_params)


def test_init_from_npz_orbax_and_workdir_copy_the_encoder_bit_exact(resnet_setup, tmp_path):
  config, mesh, _, _, init, initial = resnet_setup
  source_config = config.copy_and_resolve_references()
  source_config.seed = 7
  with jax.set_mesh(mesh):
    source = init(jax.random.key(source_config.seed))
  source_vars = jax.device_get({"params": source.g_params, "batch_stats": source.g_batch_stats})
  assert not np.array_equal(
    source_vars["params"]["encoder"]["stem_conv"]["kernel"],
    initial.g_params["encoder"]["stem_conv"]["kernel"],
  )

  npz = str(tmp_path / "encoder.npz")
  warm_start.save_encoder_npz(npz, _encoder(source_vars))
  orbax_dir = str(tmp_path / "encoder_ckpt")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(orbax_dir, _encoder(source_vars))
  checkpointer.wait_until_finished()
  workdir = str(tmp_path / "run")
  manager = checkpointing.create_manager(workdir, source_config)
  checkpointing.save(manager, 0, source, source_config, force=True)
  manager.wait_until_finished()
  manager.close()

  for path in (npz, orbax_dir, workdir):
    warm_config = config.copy_and_resolve_references()
    warm_config.model.init_from = path
    configuration.validate(warm_config)
    state = _warm(warm_config, mesh, init)
    _assert_trees_equal(
      _encoder({"params": state.g_params, "batch_stats": state.g_batch_stats}),
      _encoder(source_vars),
    )
    _assert_trees_equal(state.g_params["to_ab"], initial.g_params["to_ab"])


def test_init_from_mistakes_are_one_line_config_errors(resnet_setup, tmp_path):
  config, mesh, _, _, init, _ = resnet_setup
  wrong_width = _fake_torchvision_state_dict(np.random.RandomState(0), 2 * W)
  np.savez(tmp_path / "wide.npz", **wrong_width)
  np.savez(tmp_path / "partial.npz", **{"params/stem_conv/kernel": np.zeros((7, 7, 1, W))})
  cases = [
    (str(tmp_path / "wide.npz"), "has shape"),
    (str(tmp_path / "partial.npz"), "lacks"),
    (str(tmp_path), "neither a .npz"),
  ]
  for path, message in cases:
    warm_config = config.copy_and_resolve_references()
    warm_config.model.init_from = path
    with pytest.raises(errors.ConfigError, match=message):
      _warm(warm_config, mesh, init)
  unet = tiny_config(**{"model.init_from": str(tmp_path / "wide.npz")})
  with pytest.raises(errors.ConfigError, match="has none: use resnet_unet"):
    configuration.validate(unet)
  missing = config.copy_and_resolve_references()
  missing.model.init_from = str(tmp_path / "nope.npz")
  with pytest.raises(errors.ConfigError, match="neither a .npz file nor a directory"):
    configuration.validate(missing)


def test_init_from_an_rgb_stem_fills_the_l_channel_of_a_hints_stem(tmp_path):
  """With color hints the stem takes L, ab and a mask: the torchvision stem (summed over RGB) fills
  the L channel and the hint channels start at zero; the rest loads as without hints."""
  sd = _fake_torchvision_state_dict(np.random.RandomState(2), W)
  path = str(tmp_path / "resnet18.npz")
  np.savez(path, **sd)
  config = tiny_config(
    **{"model.generator": "resnet_unet", "model.g_base_features": W, "hints.enabled": True}
  )
  variables = models.abstract_variables(models.create_generator(config), 32)
  expected = {c: tree["encoder"] for c, tree in variables.items()}
  assert expected["params"]["stem_conv"]["kernel"].shape == (7, 7, 4, W)
  loaded = warm_start.load_encoder(path, expected)
  stem = loaded["params"]["stem_conv"]["kernel"]
  np.testing.assert_array_equal(
    stem[:, :, :1], sd["conv1.weight"].transpose(2, 3, 1, 0).sum(2, keepdims=True)
  )
  assert stem.shape == (7, 7, 4, W) and not stem[:, :, 1:].any()
  np.testing.assert_array_equal(
    loaded["params"]["layer1_0"]["conv1"]["kernel"],
    sd["layer1.0.conv1.weight"].transpose(2, 3, 1, 0),
  )
