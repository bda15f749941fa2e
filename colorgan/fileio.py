"""Files colorgan reads and writes: whole or not at all, checked against what they should hold.

Writes go to a temporary name beside the target, renamed over it when done: a reader (TensorBoard, a
sweep table, a browser, another run) never sees half a file, and a process killed mid-write leaves
the previous version (or nothing) behind, never a truncated one. Weights read from files (.npz,
checkpoints, PyTorch's) are checked array by array against the network they are for (`check_tree`),
so a wrong file is one line naming an array, not a shape error deep inside a jit.
"""

from collections.abc import Mapping
import contextlib
import os
import shutil
import threading
from typing import Any, Iterator

import numpy as np

from colorgan import errors


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path`; renamed over `path` on success, removed on any error.

  The temporary name is hidden (a leading dot: folder walks skip it) and unique to the process and
  thread, so concurrent writers of one folder never collide. The parent folder is created. The
  temporary path may become a folder (a SavedModel): it then replaces a folder at `path`.

    with fileio.atomic_path(out) as tmp:
      image.save(tmp, format="PNG")  # give the format: the temporary name has no extension
  """
  folder, name = os.path.split(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
  try:
    yield tmp
    if os.path.isdir(tmp) and os.path.isdir(path):  # os.replace cannot replace a non-empty folder
      old = f"{tmp}.old"
      os.replace(path, old)
      os.replace(tmp, path)
      shutil.rmtree(old)
    else:
      os.replace(tmp, path)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp)
    elif os.path.exists(tmp):
      os.remove(tmp)


def read_npz(path: str) -> dict[str, np.ndarray]:
  """Every array of a .npz file, read without pickles (weights and statistics files).

  Raises:
    ValueError: one line: no such file, or not a readable .npz.
  """
  try:
    with np.load(path, allow_pickle=False) as npz:
      return {key: npz[key] for key in npz.files}
  except FileNotFoundError:
    raise ValueError(f"{path}: no such file") from None
  except Exception as e:  # pylint: disable=broad-except  (zipfile, numpy and OS errors)
    raise ValueError(
      f"{path} is not a readable .npz ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    ) from None


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically."""
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    f.write(text)


def ensure_writable(workdir: str) -> bool:
  """Creates `workdir` if needed and checks that files can be written there.

  Returns:
    Whether this call created the workdir.

  Raises:
    errors.WorkdirError: it is not a directory, cannot be created, or cannot be written.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.WorkdirError(f"--workdir={workdir} exists and is not a directory")
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise errors.WorkdirError(
      f"--workdir={workdir} cannot be created: {e.strerror or e} (a "
      "read-only file system or a missing permission: choose another "
      "--workdir)"
    ) from None
  probe = os.path.join(workdir, f".colorgan-write-test.{os.getpid()}")
  try:
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise errors.WorkdirError(
      f"--workdir={workdir} cannot be written: {e.strerror or e} (a "
      "read-only file system or a missing permission: choose another "
      "--workdir)"
    ) from None
  return created


def flatten(tree: Mapping | None) -> dict[str, Any]:
  """{"params": {"conv": {"kernel": x}}} -> {"params/conv/kernel": x}; "/"-joined keys stay so.

  Empty subtrees are dropped (a network without batch statistics has `"batch_stats": {}`).
  """
  flat = {}
  for key, value in (tree or {}).items():
    if isinstance(value, Mapping):
      flat.update({f"{key}/{k}": v for k, v in flatten(value).items()})
    else:
      flat[key] = value
  return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  """The inverse of `flatten`."""
  tree = {}
  for key, value in flat.items():
    *path, leaf = key.split("/")
    node = tree
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def _shape(leaf) -> tuple[int, ...]:
  shape = getattr(leaf, "shape", None)  # arrays, jax.ShapeDtypeStruct, orbax's array metadata
  return tuple(np.shape(leaf) if shape is None else shape)


def check_tree(
  loaded: dict,
  expected: dict,
  *,
  what: str,
  fix: str = "",
  allow_extra: bool = False,
  error: type[errors.ColorganError] = errors.WeightsError,
) -> None:
  """Raises `error` naming the first array `loaded` lacks or holds in another shape than `expected`.

  Args:
    loaded: the arrays read (nested dicts, or flat with "/"-joined keys).
    expected: the network's variables (arrays or shape structs), nested or flat as `loaded`.
    what: the message's subject, what the file is not, e.g. "w.npz does not hold the FID Inception
      weights" or "config.model.init_from=W does not fit this config's generator".
    fix: what to do, appended to the message ("; convert ... with ...").
    allow_extra: arrays that the network lacks are ignored (a PyTorch file of a larger network).
    error: the error class (errors.ConfigError for a config key).
  """
  got, want = flatten(loaded), flatten(expected)
  missing = sorted(set(want) - set(got))
  extra = [] if allow_extra else sorted(set(got) - set(want))
  if missing:
    raise error(
      f"{what}: no weights for {len(missing)} of the network's {len(want)} arrays: it "
      f"lacks {missing[0]!r}{fix}"
    )
  if extra:
    raise error(
      f"{what}: it has {extra[0]!r}, which the network lacks ({len(extra)} unexpected "
      f"of {len(got)} arrays){fix}"
    )
  for key in sorted(want):
    if _shape(got[key]) != _shape(want[key]):
      raise error(
        f"{what}: {key!r} has shape {_shape(got[key])}, the network needs {_shape(want[key])}{fix}"
      )


def read_variables(path: str, expected: dict[str, Any], *, what: str) -> dict[str, Any]:
  """The variables stored in a .npz, checked array by array against `expected`.

  A .npz holds one array per leaf, named "<collection>/<module>/.../<leaf>"
  ("params/Mixed_5b/branch1x1/kernel", "batch_stats/..."), as `python -m colorgan.convert_weights`
  writes them.

  Args:
    path: the .npz.
    expected: the network's variables (arrays or shape structs), e.g. from jax.eval_shape(init).
    what: the network's name for messages ("FID Inception").

  Returns:
    The same tree structure as `expected`, of numpy float32 arrays.

  Raises:
    errors.WeightsError: unreadable, not a .npz, or an array missing, extra or of another shape.
  """
  try:
    arrays = read_npz(path)
  except ValueError as e:
    raise errors.WeightsError(str(e)) from None
  check_tree(
    arrays,
    expected,
    what=f"{path} does not hold the {what} weights",
    fix="; convert the reference .pth with `python -m colorgan.convert_weights`",
  )
  return unflatten({key: np.asarray(value, np.float32) for key, value in arrays.items()})
