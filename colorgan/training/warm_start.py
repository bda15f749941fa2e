"""Starting a fresh run from earlier weights: a pretrained generator, or a pretrained encoder.

  config.init_generator_from=WORKDIR  the generator of another run (e.g. configs/pretrain_l1.py), as
                                      inference would use it: its EMA when that run kept one. The
                                      discriminator and both optimizers start fresh.
  config.model.init_from=PATH         the ResNet encoder of resnet_unet from
                                        - a .npz of arrays named "params/<module>/.../<leaf>" and
                                          "batch_stats/..." (what `save_encoder_npz` writes), or with
                                          torchvision's names ("layer1.0.conv1.weight", ...);
                                        - a colorgan workdir of a resnet_unet run (its encoder);
                                        - an orbax checkpoint of {"params": ..., "batch_stats": ...}
                                          (ocp.StandardCheckpointer().save(PATH, encoder_variables)).

Both apply only when a run starts (step 0); a resumed run continues from its own checkpoint. Weights are
copied bit for bit; any difference in structure or shape is a one-line ConfigError.
"""

import os

import jax
import ml_collections
import numpy as np

from colorgan import checkpointing
from colorgan import errors
from colorgan import fileio
from colorgan import parallel
from colorgan.training.state import GanState

ENCODER = "encoder"  # the generator's submodule that config.model.init_from fills


def _check_fits(loaded: dict, expected: dict, what: str) -> None:
  """Raises ConfigError naming the first missing, unexpected or differently shaped array."""
  fileio.check_tree(
    loaded, expected, what=f"{what} does not fit this config's generator", error=errors.ConfigError
  )


def save_encoder_npz(path: str, encoder_variables: dict) -> None:
  """Writes {"params": ..., "batch_stats": ...} of an encoder as a .npz that init_from reads."""
  arrays = {
    f"{collection}/{key}": np.asarray(value)
    for collection, tree in encoder_variables.items()
    for key, value in fileio.flatten(tree).items()
  }
  np.savez(path, **arrays)


def load_encoder(path: str, expected: dict) -> dict:
  """The encoder variables stored at `path` (see the module docstring), as numpy float32 arrays.

  Args:
    path: config.model.init_from.
    expected: {"params": ..., "batch_stats": ...} of the encoder (arrays or shape structs).
  """
  what = f"config.model.init_from={path}"
  if path.endswith(".npz"):
    with np.load(path) as npz:
      arrays = {key: npz[key] for key in npz.files}
    if any(key.startswith(("conv1.", "layer1.")) for key in arrays):
      from colorgan.models import resnet_unet  # pylint: disable=g-import-not-at-top

      try:
        loaded = resnet_unet.encoder_from_torchvision(arrays)
      except ValueError as e:
        raise errors.ConfigError(f"{what}: {e}") from None
    else:
      loaded = fileio.unflatten(arrays)
  elif os.path.isdir(os.path.join(path, "checkpoints")):  # a colorgan run
    variables = checkpointing.restore_for_inference(path).g_variables
    if ENCODER not in variables["params"]:
      raise errors.ConfigError(f"{what}: that run's generator has no ResNet encoder")
    loaded = {collection: tree.get(ENCODER, {}) for collection, tree in variables.items()}
  else:  # an orbax checkpoint of the encoder's variables
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    checkpointer = ocp.StandardCheckpointer()
    try:
      tree = checkpointer.metadata(path).item_metadata.tree
    except Exception as e:  # pylint: disable=broad-except
      raise errors.ConfigError(
        f"{what} is neither a .npz, a colorgan workdir nor an orbax checkpoint ({type(e).__name__})"
      ) from None
    _check_fits(tree, expected, what)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
    loaded = checkpointer.restore(path, target)
  loaded = _widen_stem(loaded, expected)
  _check_fits(loaded, expected, what)
  return jax.tree.map(lambda x: np.asarray(x, np.float32), loaded)


def _widen_stem(loaded: dict, expected: dict) -> dict:
  """An L-only stem kernel [7, 7, 1, F] for a stem that also takes hints [7, 7, 4, F]: the hint
  channels start at zero, so the pretrained encoder computes at first what it did on L alone."""
  kernel = loaded.get("params", {}).get("stem_conv", {}).get("kernel")
  want = expected.get("params", {}).get("stem_conv", {}).get("kernel")
  if kernel is None or want is None or np.shape(kernel)[2] != 1 or want.shape[2] == 1:
    return loaded
  kernel = np.asarray(kernel, np.float32)
  extra = np.zeros(kernel.shape[:2] + (want.shape[2] - 1, kernel.shape[3]), np.float32)
  stem = {**loaded["params"]["stem_conv"], "kernel": np.concatenate([kernel, extra], axis=2)}
  return {**loaded, "params": {**loaded["params"], "stem_conv": stem}}


def load_generator(workdir: str, expected: dict) -> dict:
  """The generator variables of another run's latest checkpoint, as numpy arrays."""
  variables = checkpointing.restore_for_inference(workdir).g_variables
  _check_fits(variables, expected, f"config.init_generator_from={workdir}")
  return jax.tree.map(np.asarray, variables)


def _to_host(tree):
  """Replicated global arrays -> numpy, reading this process's copy (works on multi-host meshes)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def _replicate(tree, mesh: jax.sharding.Mesh):
  """Host arrays -> global arrays replicated over the mesh (on any number of processes)."""
  sharding = parallel.replicated(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]), tree
  )


def apply(config: ml_collections.ConfigDict, state: GanState, mesh: jax.sharding.Mesh) -> GanState:
  """A freshly initialized state with its generator (or encoder) replaced as the config asks."""
  if not config.init_generator_from and not config.model.init_from:
    return state
  variables = {"params": state.g_params, "batch_stats": state.g_batch_stats}
  if config.init_generator_from:
    variables = load_generator(config.init_generator_from, variables)
  else:
    variables = _to_host(variables)
    expected = {c: tree.get(ENCODER, {}) for c, tree in variables.items()}
    encoder = load_encoder(config.model.init_from, expected)
    variables = {
      c: {**tree, ENCODER: encoder.get(c, {})} if ENCODER in tree else tree
      for c, tree in variables.items()
    }
  # Each tree gets its own buffers: the state is donated to the step, and the EMA must not alias G.
  return state.replace(
    g_params=_replicate(variables["params"], mesh),
    g_batch_stats=_replicate(variables["batch_stats"], mesh),
    g_ema=_replicate(variables, mesh) if state.g_ema else state.g_ema,
  )
