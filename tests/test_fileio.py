"""fileio.atomic_path: the target appears whole or not at all."""

import os

import pytest

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
