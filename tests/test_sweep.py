"""launch/sweep.py: the product of values, one command and workdir per point, the results table."""

import importlib.util
import itertools
import json
import os
import shlex
import subprocess
import sys

from clu import metric_writers
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "launch", "sweep.py")
SPEC = "loss.gan=[vanilla,lsgan,hinge] loss.l1_weight=[10,100]"

_spec = importlib.util.spec_from_file_location("sweep", SCRIPT)
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def _run(*args, timeout=300):
  # The runs a sweep starts inherit this: compile as fast as the in-process tests do (conftest).
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="true")
  return subprocess.run(
    [sys.executable, SCRIPT, *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_a_3x2_sweep_prints_6_commands_with_distinct_workdirs(tmp_path):
  root = str(tmp_path / "sweep")
  result = _run(
    "--config=configs/quickstart.py",
    f"--sweep={SPEC}",
    f"--workdir={root}",
    "--",
    "--config.total_steps=150",
  )
  assert result.returncode == 0, result.stderr
  commands = [shlex.split(line) for line in result.stdout.strip().splitlines()]
  assert len(commands) == 6
  workdirs, points = [], []
  for command in commands:
    assert command[:4] == ["python", "-m", "colorgan.main", "--config=configs/quickstart.py"]
    assert command[-1] == "--config.total_steps=150"
    flags = dict(arg[2:].split("=", 1) for arg in command[4:])
    workdirs.append(flags["workdir"])
    points.append((flags["config.loss.gan"], flags["config.loss.l1_weight"]))
    assert os.path.dirname(flags["workdir"]) == root
    assert os.path.basename(flags["workdir"]) == (
      f"gan={flags['config.loss.gan']},l1_weight={flags['config.loss.l1_weight']}"
    )
  assert len(set(workdirs)) == 6
  assert sorted(points) == sorted(itertools.product(["vanilla", "lsgan", "hinge"], ["10", "100"]))


@pytest.mark.parametrize(
  "args, message",
  [
    (["--sweep=loss.gann=[vanilla,hinge]"], "'loss.gann' is not a key of the config"),
    (
      ["--sweep=loss.gan=[vanilla,wgan]"],
      "sweep point gan=wgan: config.loss.gan='wgan' is not known",
    ),
    (["--sweep=loss.l1_weight=[10,much]"], "loss.l1_weight='much' is not a float"),
    (["--sweep=loss.gan=[vanilla,]"], "has an empty value"),
    (["--sweep=loss.gan=[hinge]", "--", "--config.optim.d_steps=0"], "must be a number >= 1"),
    (["--sweep=loss.gan=[hinge] loss.gan=[lsgan]"], "names loss.gan twice"),
  ],
)
def test_mistakes_stop_the_sweep_before_any_run_in_one_line(capsys, args, message):
  assert sweep.main(["--config=configs/quickstart.py", *args]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("sweep: error:") and message in err[0], err


def test_same_leaf_names_get_full_keys_in_workdir_names():
  runs = sweep.expand("c.py", "optim.b1=[0.5,0.9] loss.b1=[1] seed=[0]", "root", [])
  assert [r["name"] for r in runs] == [
    "optim.b1=0.5,loss.b1=1,seed=0",
    "optim.b1=0.9,loss.b1=1,seed=0",
  ]


def test_table_prefers_the_newest_evaluation_and_falls_back_to_training_scalars(tmp_path):
  runs = sweep.expand("configs/quickstart.py", "loss.gan=[vanilla,lsgan,hinge]", str(tmp_path), [])
  evaluated, logged, missing = (r["workdir"] for r in runs)
  os.makedirs(os.path.join(evaluated, "eval"))
  for step, psnr in ((50, 20.0), (100, 22.5)):
    with open(os.path.join(evaluated, "eval", f"step_{step}.json"), "w") as f:
      json.dump(
        {
          "step": step,
          "model": {"psnr": psnr, "colorfulness": 31.0},
          "baseline": {"psnr": 21.0},
          "name": "ignored",
        },
        f,
      )
  writer = metric_writers.create_default_writer(logged)
  for step, l1 in ((25, 9.0), (50, 7.25)):
    writer.write_scalars(step, {"ab_l1_lab": l1, "g_adv": 0.7, "steps_per_sec": 3.0})
  writer.flush()
  writer.close()

  rows = sweep.results(runs)
  assert rows[0] == dict(
    point="gan=vanilla",
    step=100,
    source="eval",
    metrics={"model.psnr": 22.5, "model.colorfulness": 31.0, "baseline.psnr": 21.0},
  )
  assert rows[1]["step"] == 50 and rows[1]["source"] == "train"
  assert rows[1]["metrics"] == pytest.approx({"ab_l1_lab": 7.25, "g_adv": 0.7})
  assert rows[2] == dict(point="gan=hinge", step=None, source="-", metrics={})

  header = sweep.format_table(rows).splitlines()[0]  # every column found: "step" only once
  assert [c.strip() for c in header.strip("|").split("|")].count("step") == 1, header
  table = sweep.format_table(rows, ["model.psnr", "ab_l1_lab"]).splitlines()
  assert len(table) == 5
  assert [c.strip() for c in table[0].strip("|").split("|")] == [
    "point",
    "step",
    "source",
    "model.psnr",
    "ab_l1_lab",
  ]
  assert [c.strip() for c in table[2].strip("|").split("|")] == [
    "gan=vanilla",
    "100",
    "eval",
    "22.5",
    "-",
  ]
  assert [c.strip() for c in table[3].strip("|").split("|")] == [
    "gan=lsgan",
    "50",
    "train",
    "-",
    "7.25",
  ]


@pytest.mark.slow
def test_run_trains_each_point_and_tabulates_it(tmp_path):
  result = _run(
    "--config=configs/default.py:smoke",
    "--sweep=loss.gan=[hinge]",
    f"--workdir={tmp_path}",
    "--run",
    "--",
    "--config.total_steps=2",
    "--config.log_every_steps=1",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0].startswith("[sweep 1/1] python -m colorgan.main")
  row = [c.strip() for c in lines[-1].strip("|").split("|")]
  # Training evaluates at its last step, so the table reads that run's eval JSON.
  assert row[:4] == ["gan=hinge", "2", "eval", "ok"]
  assert os.path.isfile(os.path.join(tmp_path, "gan=hinge", "eval", "step_2.json"))
  assert os.path.isdir(os.path.join(tmp_path, "gan=hinge", "checkpoints", "2"))
