"""The Makefile's targets install what they need and no more, once (issue 23, item 11).

`make` really runs on a copy of the Makefile and the dependency files, with a stand-in for
`python3 -m venv` whose `pip` and `python` only log their arguments: no package is installed.
"""

import os
import shutil
import subprocess
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `python3 -m venv DIR` as a venv whose bin/pip and bin/python append their arguments to $MAKE_LOG.
FAKE_PYTHON = """#!/bin/sh
set -e
test "$1 $2" = "-m venv"
mkdir -p "$3/bin"
for tool in pip python; do
  printf '#!/bin/sh\\necho "%s $*" >> "$MAKE_LOG"\\n' "$tool" > "$3/bin/$tool"
  chmod +x "$3/bin/$tool"
done
echo "venv $3" >> "$MAKE_LOG"
"""


@pytest.fixture
def make(tmp_path):
  """Runs `make TARGET` on a copy of the repo's Makefile; returns the lines pip/python/venv logged."""
  for name in ("Makefile", "pyproject.toml", "requirements.lock"):
    shutil.copy(os.path.join(REPO, name), tmp_path / name)
  fake_python = tmp_path / "fake_python3"
  fake_python.write_text(FAKE_PYTHON)
  fake_python.chmod(0o755)
  log = tmp_path / "log"
  env = dict(os.environ, MAKE_LOG=str(log))

  def run(target):
    log.write_text("")
    subprocess.run(
      [
        "make",
        "--no-print-directory",
        f"PYTHON={fake_python}",
        "VENV=venv",
        "WORKDIR=workdirs/quickstart",
        target,
      ],
      cwd=tmp_path,
      env=env,
      check=True,
      capture_output=True,
      text=True,
    )
    return log.read_text().splitlines()

  run.path = tmp_path
  return run


def _pip(lines):
  return [line for line in lines if line.startswith("pip ")]


def test_train_installs_the_runtime_only(make):
  lines = make("train")
  assert lines[0] == "venv venv"
  assert _pip(lines) == ["pip install --quiet --constraint requirements.lock --editable ."]
  assert lines[-1] == (
    "python -m colorgan.main --config=configs/quickstart.py --workdir=workdirs/quickstart"
  )


@pytest.mark.parametrize("target, extra", [("test", "test"), ("serve", "serve")])
def test_test_and_serve_add_their_extra(make, target, extra):
  make("train")
  lines = make(target)
  assert "venv venv" not in lines  # the venv train made is reused
  assert _pip(lines) == [
    f"pip install --quiet --constraint requirements.lock --editable .[{extra}]"
  ]
  assert lines[-1].startswith("python -m " + ("pytest" if target == "test" else "colorgan.serve"))


def test_a_second_run_does_not_call_pip(make):
  for target in ("train", "test", "serve"):
    make(target)
  for target in ("train", "test", "serve", "install"):
    assert not _pip(make(target)), target


def test_changed_dependencies_reinstall_once(make):
  make("train")
  make("test")
  # The stamps older than pyproject.toml, as after a `git pull` that changed it (mtimes in the
  # past: make warns of ones in the future).
  venv = make.path / "venv"
  for stamp in (".installed-runtime", ".installed-test"):
    os.utime(venv / stamp, (1_000_000_000, 1_000_000_000))
  os.utime(make.path / "pyproject.toml", (1_000_000_100, 1_000_000_100))
  assert _pip(make("train")) == ["pip install --quiet --constraint requirements.lock --editable ."]
  assert not _pip(make("train"))
  assert len(_pip(make("test"))) == 1


def test_the_runtime_has_none_of_the_test_extras():
  """What `make train` installs: the runtime dependencies, without what only tests use."""
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  runtime = {dep.split("==")[0].lower() for dep in project["dependencies"]}
  test_only = {dep.split("==")[0].lower() for dep in project["optional-dependencies"]["test"]}
  assert not runtime & {"torch", "torchvision", "playwright", "onnxruntime", "gradio", "pytest"}
  assert not runtime & test_only
