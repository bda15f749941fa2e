"""The README's "Getting started" commands, run as written (issue 23, item 14).

Every command of the section's fenced blocks is handled here, and one this file does not know fails
the test, so the section cannot drift from what works. The commands after `make train` run as written
in a folder laid out like a clone after `make train`: `.venv/bin/*` are this interpreter's,
`workdirs/quickstart` is a tiny run trained here (32 px, 2 steps) and the photo the README names is a
bundled photo. `make` lines are dry-run (`make -n`) with a throw-away VENV; the quickstart config that
`make train` trains is built with `--mode=summary` (training it takes minutes), and `make serve`'s
page is tested by tests/test_serve.py.
"""

import os
import re
import shlex
import subprocess
import sys

from PIL import Image
import pytest
import skimage.data

from colorgan.training import loop
from configs import quickstart
from tests.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "## Getting started"
BIN = os.path.dirname(sys.executable)


def _readme():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    return f.read()


def _section():
  text = _readme()
  start = text.index(SECTION)
  end = text.find("\n## ", start + len(SECTION))
  return text[start : end if end >= 0 else len(text)]


def _commands():
  """(command, comment) for each command of the section's ```sh blocks, continuation lines joined."""
  commands = []
  for block in re.findall(r"```sh\n(.*?)```", _section(), re.S):
    pending = ""
    for line in block.splitlines():
      code, _, comment = line.partition(" #")
      if code.rstrip().endswith("\\"):
        pending += code.rstrip()[:-1] + " "
        continue
      if (pending + code).strip():
        commands.append((shlex.split(pending + code), comment.strip()))
      pending = ""
  return commands


def _env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = "--xla_cpu_use_fusion_emitters=false"
  return env


def test_getting_started_is_the_first_screen():
  text = _readme()
  headings = re.findall(r"^## .*", text, re.M)
  assert headings[0] == SECTION
  lines = text[: text.index(SECTION)].count("\n") + _section().count("\n")
  assert lines <= 60, f"the title and Getting started take {lines} lines: more than one screen"
  # What a clone has: nothing outside the repository.
  assert "../" not in _section()
  assert "Two commands" not in text


def test_the_sample_grids_named_are_the_ones_make_train_writes():
  config = quickstart.get_config()
  steps = [int(n) for n in re.findall(r"\bstep_(\d+)\.png", _section())]
  assert steps and config.total_steps in steps
  assert all(n % config.sample_every_steps == 0 and n <= config.total_steps for n in steps)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
  """A folder like a clone after `make train`: .venv/bin tools and a trained workdirs/quickstart."""
  root = tmp_path_factory.mktemp("clone")
  os.makedirs(root / ".venv" / "bin")
  for tool in ("python", "tensorboard"):
    wrapper = root / ".venv" / "bin" / tool
    # A wrapper, not a link: a linked venv python would not find the venv's packages.
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(os.path.join(BIN, tool))} "$@"\n')
    wrapper.chmod(0o755)
  loop.train_and_evaluate(
    tiny_config(total_steps=2, eval_every_steps=0, num_samples=1),
    str(root / "workdirs" / "quickstart"),
  )
  return root


def test_getting_started_commands(clone):
  commands = _commands()
  assert commands[0][0][:2] == ["make", "train"], "Getting started starts with make train"
  for argv, comment in commands:
    if argv[0] == "make":
      _check_make(argv)
    elif argv[0] == "ls":
      listed = subprocess.run(argv, cwd=clone, check=True, capture_output=True, text=True)
      assert listed.stdout.split(), argv
      # The names the comment shows are spelled as the run writes them (digits aside).
      for shown in re.findall(r"[\w.]+\.png", comment):
        pattern = re.sub(r"\d", r"\\d", re.escape(shown))
        assert all(re.fullmatch(pattern, name) for name in listed.stdout.split()), shown
    elif argv[0] == ".venv/bin/tensorboard":
      # A server: its program is the runtime's and its logdir holds the run's events.
      assert os.access(os.path.join(BIN, "tensorboard"), os.X_OK)
      flags = " ".join(argv[1:]).replace("--logdir=", "--logdir ").split()
      logdir = flags[flags.index("--logdir") + 1]
      assert any(f.startswith("events.out.tfevents") for f in os.listdir(clone / logdir))
    elif argv[:3] == [".venv/bin/python", "-m", "colorgan.main"]:
      _run_main(argv, comment, clone)
    else:
      pytest.fail(f"tests/test_readme.py does not know how to run {shlex.join(argv)!r}")


def _check_make(argv):
  """`make TARGET`, dry-run: the target exists; train's run is the quickstart config's summary."""
  plan = subprocess.run(
    ["make", "-n", "VENV=/nonexistent/venv", *argv[1:]],
    cwd=REPO,
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  if argv[1] != "train":
    return
  run = next(line for line in plan.splitlines() if "-m colorgan.main" in line)
  config = next(a for a in shlex.split(run) if a.startswith("--config="))
  assert config == "--config=configs/quickstart.py"
  summary = subprocess.run(
    [sys.executable, "-m", "colorgan.main", config, "--mode=summary"],
    cwd=REPO,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert summary.returncode == 0, summary.stderr[-2000:]
  assert '"generator_params"' in summary.stdout.splitlines()[-1]


def _run_main(argv, comment, clone):
  """Runs a colorgan.main command as written in the clone; the photo it names is a bundled one."""
  for arg in argv:
    if arg.startswith("--input=") and not (clone / arg.split("=", 1)[1]).exists():
      Image.fromarray(skimage.data.coffee()).save(clone / arg.split("=", 1)[1], quality=90)
  result = subprocess.run(argv, cwd=clone, env=_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  # "writes colorized/my_photo.png": the file the comment promises.
  for written in re.findall(r"writes (\S+)", comment):
    assert (clone / written).is_file(), written
