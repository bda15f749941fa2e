"""fileio: atomic writes (the target appears whole or not at all) and checked weight files."""

import os

import numpy as np
import pytest

from colorgan import errors
from colorgan import fileio


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path):
  target = tmp_path / "sub" / "out.json"
  fileio.write_text(str(target), "first")
  assert target.read_text() == "first"
  with pytest.raises(RuntimeError):
    with fileio.atomic_path(str(target)) as tmp:
      with open(tmp, "w") as f:
        f.write("half")
      raise RuntimeError("killed mid-write")
  assert target.read_text() == "first"
  assert os.listdir(target.parent) == ["out.json"]  # no temporary left behind
  fileio.write_text(str(target), "second")
  assert target.read_text() == "second" and os.listdir(target.parent) == ["out.json"]


def test_a_folder_replaces_a_folder_whole(tmp_path):
  target = tmp_path / "saved_model"
  target.mkdir()
  (target / "old.pb").write_text("old")
  with fileio.atomic_path(str(target)) as tmp:
    os.makedirs(os.path.join(tmp, "variables"))
    open(os.path.join(tmp, "new.pb"), "w").write("new")
  assert sorted(os.listdir(target)) == ["new.pb", "variables"]
  with pytest.raises(RuntimeError):
    with fileio.atomic_path(str(target)) as tmp:
      os.makedirs(tmp)
      raise RuntimeError("the export failed")
  assert sorted(os.listdir(target)) == ["new.pb", "variables"]  # the last whole one stays
  assert sorted(os.listdir(tmp_path)) == ["saved_model"]  # no temporary left behind


_EXPECTED = {
  "params": {"conv": {"kernel": np.zeros((3, 3, 1, 4)), "bias": np.zeros(4)}},
  "batch_stats": {},
}


@pytest.mark.parametrize(
  "loaded, message",
  [
    (
      {"params/conv/kernel": np.zeros((3, 3, 1, 4))},
      "w.npz is not the net: no weights for 1 of the network's 2 arrays: it lacks "
      "'params/conv/bias'",
    ),
    (
      {
        "params/conv/kernel": np.zeros((3, 3, 1, 4)),
        "params/conv/bias": np.zeros(4),
        "params/head/bias": np.zeros(1),
      },
      "w.npz is not the net: it has 'params/head/bias', which the network lacks (1 unexpected of 3 "
      "arrays)",
    ),
    (
      {"params": {"conv": {"kernel": np.zeros((3, 3, 2, 4)), "bias": np.zeros(4)}}},
      "w.npz is not the net: 'params/conv/kernel' has shape (3, 3, 2, 4), the network needs "
      "(3, 3, 1, 4)",
    ),
  ],
)
def test_check_tree_names_the_first_array_that_does_not_fit(loaded, message):
  with pytest.raises(errors.WeightsError) as e:
    fileio.check_tree(loaded, _EXPECTED, what="w.npz is not the net")
  assert str(e.value) == message
  with pytest.raises(errors.ConfigError, match="; fix it"):  # the error class a caller asks for
    fileio.check_tree(loaded, _EXPECTED, what="x", fix="; fix it", error=errors.ConfigError)


def test_check_tree_can_ignore_arrays_the_network_lacks():
  loaded = {
    "params/conv/kernel": np.zeros((3, 3, 1, 4)),
    "params/conv/bias": np.zeros(4),
    "fc/weight": np.zeros((2, 2)),
  }  # a PyTorch state_dict of a larger network
  fileio.check_tree(loaded, _EXPECTED, what="w.pth", allow_extra=True)


def test_read_variables_returns_the_tree_or_one_line(tmp_path):
  path = str(tmp_path / "w.npz")
  np.savez(path, **{"params/conv/kernel": np.ones((3, 3, 1, 4)), "params/conv/bias": np.ones(4)})
  variables = fileio.read_variables(path, _EXPECTED, what="test")
  assert variables["params"]["conv"]["kernel"].dtype == np.float32
  assert variables["params"]["conv"]["bias"].shape == (4,)
  with pytest.raises(errors.WeightsError, match="does not hold the other weights: .*lacks"):
    fileio.read_variables(path, {"params": {"dense": {"kernel": np.zeros(1)}}}, what="other")
  with pytest.raises(errors.WeightsError, match="nope.npz: no such file"):
    fileio.read_variables(str(tmp_path / "nope.npz"), _EXPECTED, what="test")
