"""Files written whole or not at all: a temporary name beside the target, renamed over it when done.

A reader (TensorBoard, a sweep table, a browser, another run) never sees half a file, and a process
killed mid-write leaves the previous version (or nothing) behind, never a truncated one.
"""

import contextlib
import os
import shutil
import threading
from typing import Iterator

import numpy as np


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
    raise ValueError(f"{path} is not a readable .npz ({type(e).__name__}: "
                     f"{' '.join(str(e).split())[:200]})") from None


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically."""
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    f.write(text)
