"""Checkpoints: exact resume, SIGTERM, kill -9 during a save, NaN stop/skip, config-change refusal.

The signal tests run the real command line in a subprocess (tiny smoke config) and resume in-process.
"""

import functools  # noqa: F401  (used by _GENERATOR_VALUES, exec-ed in this module)
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from colorgan import checkpointing
from colorgan import errors
from colorgan import main
from colorgan import models
from colorgan import parallel
from colorgan.training import loop
from colorgan.training import preemption
from colorgan.training import resume
from colorgan.training import step as step_lib
from tests.conftest import leaves as _leaves
from tests.conftest import run_module
from tests.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 3  # steps before the interruption; the runs go to 2N


def _config(**overrides):
  # Checkpoints only where the test says (and at the end); no sample grid before the end.
  defaults = dict(checkpoint_every_steps=N, log_every_steps=N, sample_every_steps=1000)
  return tiny_config(**{**defaults, **overrides})


def _steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(name) for name in names if name.isdigit())


def _runs(workdir):
  with open(os.path.join(workdir, "reproducibility.json")) as f:
    return json.load(f)["runs"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """2N steps in one go (workdir a) and N steps, then a rerun to 2N (workdir b)."""
  root = tmp_path_factory.mktemp("resume")
  a, b = str(root / "a"), str(root / "b")
  uninterrupted = loop.train_and_evaluate(_config(total_steps=2 * N), a)
  first = loop.train_and_evaluate(_config(total_steps=N), b)
  resumed = loop.train_and_evaluate(_config(total_steps=2 * N), b)
  return a, b, uninterrupted, first, resumed


def test_resume_is_bit_identical_to_an_uninterrupted_run(runs):
  a, b, uninterrupted, first, resumed = runs
  assert int(first.step) == N and int(resumed.step) == int(uninterrupted.step) == 2 * N
  for name in (
    "g_params",
    "g_batch_stats",
    "g_opt_state",
    "d_params",
    "d_opt_state",
    "step",
    "rng",
  ):
    x, y = _leaves(getattr(uninterrupted, name)), _leaves(getattr(resumed, name))
    assert len(x) == len(y) > 0
    assert all(np.array_equal(u, v) for u, v in zip(x, y)), f"{name} differs after resuming"
  # Not trivially equal: the second half of the run changed every parameter.
  assert not any(
    np.array_equal(u, v) for u, v in zip(_leaves(first.g_params), _leaves(resumed.g_params))
  )
  # Adam's moments are in the comparison above (2 networks x (mu, nu) x params + counts).
  adam = [
    s
    for s in jax.tree.leaves(
      resumed.g_opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)
    )
    if isinstance(s, optax.ScaleByAdamState)
  ]
  assert len(adam) == 1
  assert len(_leaves(adam[0].mu)) == len(_leaves(adam[0].nu)) == len(_leaves(resumed.g_params))

  assert _steps(a) == _steps(b) == [N, 2 * N]
  manager = ocp.CheckpointManager(os.path.join(b, "checkpoints"), item_names=checkpointing.ITEMS)
  position = checkpointing.restore_data_position(manager, 2 * N, _config())
  assert position == checkpointing.DataPosition(2 * N * 4, 4, 0)  # 2N global batches of 4
  manager.close()

  # The reproducibility record: one entry per start, resumed at N.
  record = _runs(b)
  assert [r["start_step"] for r in record] == [0, N]
  assert record[-1]["config"]["total_steps"] == 2 * N
  assert record[-1]["packages"]["jax"] == jax.__version__
  assert record[-1]["jax"]["devices"] == [str(d) for d in jax.devices()]
  git = record[-1]["git"]  # None where the code is not a git checkout
  assert git is None or len(git["commit"]) == 40


def test_a_changed_model_or_optimizer_is_refused_with_the_keys(runs, capsys, monkeypatch):
  _, b, *_ = runs
  before = (_steps(b), len(_runs(b)))
  config = _config(total_steps=3 * N, log_every_steps=1, keep_checkpoints=5)  # free to change
  config.model.g_base_features = 16
  config.optim.b1 = 0.9
  with pytest.raises(errors.ConfigError) as e:
    loop.train_and_evaluate(config, b)
  message = str(e.value)
  assert "\n" not in message
  assert "model.g_base_features (8 -> 16), optim.b1 (0.5 -> 0.9)" in message
  assert "total_steps" not in message and "allow_config_change=True" in message
  assert (_steps(b), len(_runs(b))) == before  # nothing written

  # The command line turns it into one line on stderr and exit status 2.
  argv = [
    "colorgan",
    f"--config={REPO}/configs/default.py:smoke",
    f"--workdir={b}",
    "--config.model.d_layers=2",
  ]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
  main.FLAGS(argv)
  try:
    with pytest.raises(SystemExit) as e:
      main.main(argv[:1])
  finally:
    main.FLAGS.unparse_flags()
  assert e.value.code == 2
  stderr = capsys.readouterr().err
  error_lines = [line for line in stderr.splitlines() if line.startswith("colorgan: error: ")]
  assert len(error_lines) == 1 and "model.d_layers (3 -> 2)" in error_lines[0], stderr
  assert "Traceback" not in stderr
  assert resume.config_changes(_config(), _config(total_steps=99, nan_policy="skip")) == ([], [])


@pytest.mark.parametrize(
  "schedule,before,after",
  [
    # 2e-4, total 8, decay over the last 4: step 6 is halfway down; over 16 (decay 8) it is not yet.
    ("linear_decay", 2e-4 * (8 - 6) / 4, 2e-4),
    (
      "cosine",
      2e-4 * 0.5 * (1 + math.cos(math.pi * 6 / 8)),
      2e-4 * 0.5 * (1 + math.cos(math.pi * 6 / 16)),
    ),
  ],
)
def test_a_new_total_steps_under_a_decaying_schedule_is_refused_unless_asked(
  tmp_path, schedule, before, after
):
  saved = _config(total_steps=8, **{"optim.d_schedule": schedule})
  manager = checkpointing.create_manager(str(tmp_path), saved)
  checkpointing.save(manager, 6, {"x": jnp.zeros(2)}, saved, force=True)  # only the config is read
  manager.wait_until_finished()
  longer = _config(total_steps=16, **{"optim.d_schedule": schedule})
  with pytest.raises(errors.ConfigError) as e:
    resume.check_config_change(manager, longer)
  message = str(e.value)
  assert "\n" not in message and "total_steps (8 -> 16)" in message
  assert (
    f"the discriminator's learning rate at step 6 would go from {before:.3g} to {after:.3g}"
    in message
  ), message
  assert "generator's" not in message.replace("discriminator's", "")  # G's schedule is constant
  assert "allow_config_change=True" in message
  longer.allow_config_change = True  # asked for: the schedule is rebuilt over 16 steps
  resume.check_config_change(manager, longer)
  # A constant schedule does not depend on total_steps: free to change, as before.
  constant = _config(total_steps=8)
  checkpointing.save(manager, 7, {"x": jnp.zeros(2)}, constant, force=True)
  manager.wait_until_finished()
  resume.check_config_change(manager, _config(total_steps=16))
  manager.close()


def test_a_checkpoint_with_the_discriminators_old_batchnorm_statistics_resumes(runs, tmp_path):
  # Checkpoints written before D's unused BatchNorm statistics were dropped from GanState hold a
  # `d_batch_stats` entry beside the other fields: the same on-disk tree as this dict.
  _, b, _, _, resumed = runs
  config = _config(total_steps=2 * N)
  fields = {
    name: getattr(resumed, name)
    for name in resumed.__dataclass_fields__
    if name not in ("g_tx", "d_tx")
  }
  old_d_stats = {"bn1": {"mean": jnp.ones(16), "var": jnp.full(16, 2.0)}}
  manager = checkpointing.create_manager(str(tmp_path), config)
  checkpointing.save(manager, 2 * N, {**fields, "d_batch_stats": old_d_stats}, config, force=True)
  manager.wait_until_finished()
  restored = checkpointing.restore_latest(manager, resumed)
  manager.close()
  assert not hasattr(restored, "d_batch_stats")
  for x, y in zip(_leaves(restored), _leaves(resumed)):
    np.testing.assert_array_equal(x, y)
  assert checkpointing.restore_for_inference(str(tmp_path)).step == 2 * N
  # A checkpoint that lacks a leaf of today's state is still refused, in one line.
  manager = checkpointing.create_manager(str(tmp_path / "short"), config)
  checkpointing.save(
    manager, 1, {k: v for k, v in fields.items() if k != "d_opt_state"}, config, force=True
  )
  manager.wait_until_finished()
  with pytest.raises(errors.RestoreError, match="cannot be restored"):
    checkpointing.restore_latest(manager, resumed)
  manager.close()


def test_a_run_moves_between_the_layer_paths_without_allow_config_change(runs, tmp_path):
  """model.fast_layers is free: what CPU saved ("auto": the matrix products) resumes on flax's
  convolutions (a GPU's "auto"), from the same parameters to the same next step, and back."""
  _, b, _, _, saved = runs  # 2N steps with the default "auto"
  assert _config().model.fast_layers == "auto" and models.use_fast_layers(_config())
  flax_dir, fast_dir = str(tmp_path / "flax"), str(tmp_path / "fast")
  shutil.copytree(b, flax_dir)
  shutil.copytree(b, fast_dir)
  # No evaluation or sample grid at the end: only the step matters here (both keys are free too).
  quiet = dict(eval_every_steps=0, num_samples=0)
  restored = loop.train_and_evaluate(
    _config(total_steps=2 * N, **quiet, **{"model.fast_layers": False}), flax_dir
  )
  assert int(restored.step) == 2 * N
  for name in ("g_params", "g_batch_stats", "d_params", "g_opt_state"):
    assert all(
      np.array_equal(u, v)
      for u, v in zip(_leaves(getattr(restored, name)), _leaves(getattr(saved, name)))
    ), name

  one_step = {
    fast: loop.train_and_evaluate(
      _config(total_steps=2 * N + 1, **quiet, **{"model.fast_layers": fast}), workdir
    )
    for fast, workdir in ((False, flax_dir), (True, fast_dir))
  }
  lr = _config().optim.g_learning_rate
  for name in ("g_params", "d_params"):
    before = _leaves(getattr(saved, name))
    flax_moves = [x - u for x, u in zip(_leaves(getattr(one_step[False], name)), before)]
    fast_moves = [x - u for x, u in zip(_leaves(getattr(one_step[True], name)), before)]
    diff = np.concatenate([np.ravel(f - r) for f, r in zip(fast_moves, flax_moves)])
    assert np.abs(np.concatenate([np.ravel(m) for m in flax_moves])).mean() > 0.1 * lr, name
    assert np.abs(diff).mean() < 1e-3 * lr, name  # the same step, up to float rounding
  # And back: the flax run's checkpoint continues on the matrix products.
  back = loop.train_and_evaluate(_config(total_steps=2 * N + 2, **quiet), flax_dir)
  assert int(back.step) == 2 * N + 2 and _steps(flax_dir)[-1] == 2 * N + 2


def test_a_damaged_latest_checkpoint_is_one_line_naming_the_previous_step(runs, tmp_path):
  _, b, *_ = runs
  workdir = str(tmp_path / "damaged")
  shutil.copytree(b, workdir)
  state_dir = os.path.join(workdir, "checkpoints", str(2 * N), "state")
  for name in os.listdir(state_dir):  # the array data, not the metadata
    if name == "d" or name.startswith("ocdbt.process"):
      shutil.rmtree(os.path.join(state_dir, name))
  with pytest.raises(errors.RestoreError) as e:
    loop.train_and_evaluate(_config(total_steps=3 * N), workdir)
  message = str(e.value)
  assert "\n" not in message and message.startswith(f"{workdir}/checkpoints/{2 * N} cannot be")
  assert f"the checkpoint of step {2 * N} is damaged or incomplete" in message
  assert f"move it out of {workdir}/checkpoints to resume from step {N}" in message
  # Nothing blames a config change that did not happen, nor shows the reader's internals.
  assert "config" not in message and "Tensor" not in message and "Error" not in message, message
  assert _steps(workdir) == [N, 2 * N]  # nothing was moved or deleted

  # Evaluate and colorize, with the whole state folder gone: one line naming the step before it.
  shutil.rmtree(state_dir)
  colorize = (f"--input={REPO}/README.md", f"--output_dir={tmp_path / 'out'}")
  for mode, extra in (("evaluate", ()), ("colorize", colorize)):
    result = _main(f"--mode={mode}", f"--workdir={workdir}", f"--step={2 * N}", *extra)
    assert result.returncode == 1, result.stderr
    error_lines = [
      line for line in result.stderr.splitlines() if line.startswith("colorgan: error:")
    ]
    assert len(error_lines) == 1, result.stderr
    assert f"{workdir}/checkpoints/{2 * N} cannot be read" in error_lines[0]
    assert f"pass --step={N} to use the step before it" in error_lines[0]
    assert "Traceback" not in result.stderr and "tensorstore" not in result.stderr.lower()
  # Without --step the latest readable checkpoint is used, and the log says so.
  result = _main("--mode=evaluate", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == N
  assert (
    f"{workdir}/checkpoints/{2 * N} cannot be read: the checkpoint of step {2 * N} is "
    f"damaged or incomplete; using step {N}, the one before it"
  ) in result.stderr


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's loop
def test_a_damaged_only_checkpoint_says_none_is_left(runs, tmp_path):
  _, b, _, _, resumed = runs
  workdir = str(tmp_path / "only")
  shutil.copytree(b, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", str(N)))
  state_dir = os.path.join(workdir, "checkpoints", str(2 * N), "state")
  for name in os.listdir(state_dir):  # the array data, not the metadata
    if name == "d" or name.startswith("ocdbt.process"):
      shutil.rmtree(os.path.join(state_dir, name))
  manager = checkpointing.create_manager(workdir, _config())
  with pytest.raises(errors.RestoreError) as e:
    checkpointing.restore_latest(manager, resumed)
  manager.close()
  message = str(e.value)
  assert message.startswith(
    f"{workdir}/checkpoints/{2 * N} cannot be read: the checkpoint of "
    f"step {2 * N} is damaged or incomplete"
  )
  assert (
    f"no earlier checkpoint is left: delete {workdir}/checkpoints/{2 * N} to train from step "
    "0, or train in another --workdir"
  ) in message
  assert "config" not in message and "damaged, or" not in message, message
  with pytest.raises(
    errors.RestoreError,
    match="no checkpoint in .* can be read: .* no earlier checkpoint is left: train again",
  ):
    checkpointing.restore_for_inference(workdir)


def test_total_steps_0_is_refused_in_one_line(tmp_path):
  # It used to say "Done: checkpoints in ..." and write none.
  result = _main(
    "--config=configs/default.py:smoke", f"--workdir={tmp_path / 'run'}", "--config.total_steps=0"
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
    "colorgan: error: config.total_steps=0 must be a number >= 1"
  )
  assert not os.path.exists(tmp_path / "run")


def test_a_change_the_state_cannot_follow_exits_in_one_line(runs, tmp_path):
  # allow_config_change lets a width change through the config check; the restore then fails.
  _, b, *_ = runs
  workdir = str(tmp_path / "wider")
  shutil.copytree(b, workdir)
  result = _main(
    "--config=configs/default.py:smoke",
    f"--workdir={workdir}",
    "--config.model.g_base_features=16",
    "--config.allow_config_change=True",
    f"--config.total_steps={3 * N}",
  )
  assert result.returncode == 1, result.stderr
  error_lines = [line for line in result.stderr.splitlines() if line.startswith("colorgan: error:")]
  assert (
    len(error_lines) == 1
    and "cannot be restored into the state this config builds" in error_lines[0]
  )
  assert "g_params" in error_lines[0] and "damaged" not in error_lines[0]  # what differs
  assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr, (
    result.stderr
  )


def _main(*args):
  return run_module("colorgan.main", *args)


def test_nonfinite_loss_stops_without_saving_and_skip_keeps_the_state(runs, tmp_path):
  _, b, _, _, resumed = runs
  # An injected NaN: the reconstruction weight, changed on resume (allow_config_change).
  workdir = str(tmp_path / "nan")
  shutil.copytree(b, workdir)
  config = _config(
    total_steps=3 * N, checkpoint_every_steps=1, log_every_steps=100, allow_config_change=True
  )
  config.loss.l1_weight = float("nan")
  with pytest.raises(errors.Diverged) as e:
    loop.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert "\n" not in message
  assert f"non-finite loss or gradient at step {2 * N + 1}:" in message
  assert "g_loss=nan" in message and "g_recon_weighted=nan" in message
  assert "(finite: " in message and "d_loss=" in message.split("(finite: ")[1]
  assert f"last good checkpoint is {workdir}/checkpoints/{2 * N}" in message
  assert _steps(workdir) == [N, 2 * N]  # step 2N + 1 was due a checkpoint: never saved
  model = checkpointing.restore_for_inference(workdir)
  assert model.step == 2 * N
  assert all(
    np.array_equal(u, v)
    for u, v in zip(_leaves(model.g_variables["params"]), _leaves(resumed.g_params))
  )

  # nan_policy=skip: every update is skipped (each step is non-finite), the step still advances.
  config.nan_policy = "skip"
  skipped = loop.train_and_evaluate(config, workdir)
  assert int(skipped.step) == 3 * N
  for name in ("g_params", "g_batch_stats", "g_opt_state", "d_params", "d_opt_state"):
    assert all(
      np.array_equal(u, v)
      for u, v in zip(_leaves(getattr(skipped, name)), _leaves(getattr(resumed, name)))
    ), name
  assert _steps(workdir)[-1] == 3 * N


# ----------------------------------------------------------------------------- subprocesses
class _Cli:
  """`python -m colorgan.main` in the background; its output collected line by line."""

  def __init__(self, workdir, *overrides, devices=1):
    env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      JAX_NUM_CPU_DEVICES=str(devices),
      JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    )
    self.proc = subprocess.Popen(
      [
        sys.executable,
        "-m",
        "colorgan.main",
        "--config=configs/default.py:smoke",
        f"--workdir={workdir}",
        "--config.total_steps=100000",
        *overrides,
      ],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line.rstrip("\n"))

  def wait_for(self, predicate, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
      if predicate():
        return
      if self.proc.poll() is not None:
        break
      time.sleep(0.002)
    self.proc.kill()
    raise AssertionError("the run never got there:\n" + "\n".join(self.lines[-20:]))

  def finish(self, timeout=120):
    self.proc.wait(timeout)
    self._reader.join(10)
    return self.proc.returncode


def _tmp_dirs(workdir):
  directory = os.path.join(workdir, "checkpoints")
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return [name for name in names if ".orbax-checkpoint-tmp" in name]


@pytest.fixture(scope="module")
def sigterm_run(tmp_path_factory):
  """A command-line run sent SIGTERM after its third step: (workdir, exit status, output lines)."""
  workdir = str(tmp_path_factory.mktemp("sigterm") / "run")
  cli = _Cli(
    workdir,
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=1000",
    "--config.sample_every_steps=100000",
  )
  cli.wait_for(lambda: any("step 3/100000" in line for line in cli.lines))
  cli.proc.send_signal(signal.SIGTERM)
  return workdir, cli.finish(), cli.lines


def test_sigterm_saves_the_current_step_and_exits_0(sigterm_run):
  workdir, code, lines = sigterm_run
  assert code == 0, "\n".join(lines[-20:])
  last = lines[-1]
  assert last.startswith("colorgan: stopped by SIGTERM at step "), "\n".join(lines[-20:])
  step = int(last.split("at step ")[1].split(":")[0])
  assert step >= 3
  assert last.endswith(f"saved {workdir}/checkpoints/{step}; rerun the same command to resume")
  assert _steps(workdir) == [step]  # not an interval step: saved because of the signal
  assert not any("Traceback" in line for line in lines)
  # The first step is logged once it ran, with its time (mostly compiling).
  assert any(
    re.search(r"step 1 done in [0-9.]+ s \(compiling the train step included\)", line)
    for line in lines
  ), "\n".join(lines[:30])
  # Only colorgan's own INFO lines: orbax logs a dozen per checkpoint.
  assert not any(
    re.match(r"I\d{4} .* (checkpoint_manager|async_checkpointer)\.py", line) for line in lines
  ), "\n".join(lines)


def test_the_rerun_resumes_and_kill_9_during_a_save_keeps_the_last_commit(sigterm_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(sigterm_run[0], workdir)
  (sigterm_step,) = _steps(workdir)
  # The same command again (a checkpoint every step now): it resumes where SIGTERM stopped it.
  cli = _Cli(
    workdir,
    "--config.log_every_steps=1000",
    "--config.checkpoint_every_steps=1",
    "--config.sample_every_steps=100000",
    "--config.keep_checkpoints=2",
  )
  # Freeze it while a save is being written, check it still is, then kill -9.
  killed_in = None
  while killed_in is None:
    cli.wait_for(lambda: _tmp_dirs(workdir) and max(_steps(workdir)) > sigterm_step)
    cli.proc.send_signal(signal.SIGSTOP)
    in_flight = _tmp_dirs(workdir)
    if in_flight:
      cli.proc.kill()
      killed_in = in_flight
    else:
      cli.proc.send_signal(signal.SIGCONT)  # it committed meanwhile: try the next save
  assert cli.finish() == -signal.SIGKILL
  assert any(
    f"Resumed from {workdir}/checkpoints at step {sigterm_step}" in line for line in cli.lines
  ), "\n".join(cli.lines[-20:])
  assert [r["start_step"] for r in _runs(workdir)] == [0, sigterm_step]
  uncommitted = int(killed_in[0].split(".")[0])
  committed = _steps(workdir)
  assert sigterm_step < max(committed) < uncommitted
  assert _tmp_dirs(workdir) == killed_in  # the half-written step is still there ...

  # What the next start does (the rerun above did all of it): its manager deletes the tmp
  # directory, and the last committed step restores.
  config, mesh = _config(), parallel.create_mesh()
  with jax.set_mesh(mesh):
    fresh = step_lib.init_train_state(
      config, models.create_generator(config), models.create_discriminator(config), mesh
    )
    manager = checkpointing.create_manager(workdir, config)
    # ... until the next run's manager deletes it: in a background thread (orbax awaits it before
    # its first save), so wait for it here.
    deadline = time.monotonic() + 60
    while _tmp_dirs(workdir) and time.monotonic() < deadline:
      time.sleep(0.05)
    assert not _tmp_dirs(workdir)
    restored = checkpointing.restore_latest(manager, fresh)
    manager.close()
  assert int(restored.step) == max(committed)


# The generator's variables, each leaf filled with its own values (leaf k: arange * (k + 1)). The
# 4-device process below runs the same source.
_GENERATOR_VALUES = """
def generator_values(config):
  abstract = jax.eval_shape(functools.partial(models.create_generator(config).init, train=False),
                            jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32))
  leaves, treedef = jax.tree.flatten(abstract)
  return jax.tree.unflatten(treedef, [
      np.arange(x.size, dtype=np.float32).reshape(x.shape) * (k + 1) for k, x in enumerate(leaves)])
"""
exec(_GENERATOR_VALUES)  # pylint: disable=exec-used


def test_inference_restores_on_1_device_what_4_devices_saved(tmp_path):
  workdir = str(tmp_path / "run")
  # A 4-device process places the values replicated over its mesh (device_put: nothing to
  # compile) and saves them as a checkpoint's generator.
  script = "\n".join(
    [
      "import functools, sys, jax, jax.numpy as jnp, numpy as np",
      "from colorgan import checkpointing, models, parallel",
      "from tests.conftest import tiny_config",
      _GENERATOR_VALUES,
      "config, mesh = tiny_config(), parallel.create_mesh()",
      "assert mesh.devices.size == 4, mesh",
      "variables = jax.device_put(generator_values(config), parallel.replicated(mesh))",
      "assert all(len(x.sharding.device_set) == 4 for x in jax.tree.leaves(variables))",
      "manager = checkpointing.create_manager(sys.argv[1], config)",
      "checkpointing.save(manager, 7, {'g_params': variables['params'],",
      "                                'g_batch_stats': variables['batch_stats']}, config, force=True)",
      "manager.close()",
    ]
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4")
  result = subprocess.run(
    [sys.executable, "-c", script, workdir],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]

  config = tiny_config()
  model = checkpointing.restore_for_inference(workdir)
  # Compared as saved, JSON: a tuple (eval.hint_counts) is a list in the checkpoint.
  assert model.step == 7 and json.loads(model.config.to_json()) == json.loads(config.to_json())
  expected = generator_values(config)  # noqa: F821  (defined by the exec above)
  for name in ("params", "batch_stats"):
    leaves = jax.tree.leaves(model.g_variables[name])
    assert all(x.sharding.device_set == {jax.local_devices()[0]} for x in leaves)
    x, y = _leaves(model.g_variables[name]), _leaves(expected[name])
    assert len(x) == len(y) > 0 and all(np.array_equal(u, v) for u, v in zip(x, y))


def test_best_checkpoint_is_kept_besides_the_latest(tmp_path):
  config = tiny_config(keep_checkpoints=1, best_checkpoint_metric="ab_l1_lab")
  manager = checkpointing.create_manager(str(tmp_path), config)
  tree = {"x": np.zeros(2, np.float32)}  # the policies do not look at the state
  for step, value in ((1, 5.0), (2, 1.0), (3, None), (4, 3.0), (5, 4.0)):
    metrics = None if value is None else {"ab_l1_lab": value}  # 3: a preemption save, unranked
    assert checkpointing.save(manager, step, tree, config, metrics=metrics, force=True)
    manager.wait_until_finished()
  assert manager.all_steps() == [2, 5]  # the lowest ab_l1_lab, and the latest
  manager.close()
  # A resumed run (a new manager) still knows which one is best: the metrics are on disk.
  manager = checkpointing.create_manager(str(tmp_path), config)
  for step, value in ((6, 2.0), (7, 6.0)):
    checkpointing.save(manager, step, tree, config, metrics={"ab_l1_lab": value}, force=True)
    manager.wait_until_finished()
  assert manager.all_steps() == [2, 7]
  manager.close()
  config.best_checkpoint_mode = "max"
  manager = checkpointing.create_manager(str(tmp_path / "max"), config)
  for step, value in ((1, 5.0), (2, 1.0), (3, 3.0)):
    checkpointing.save(manager, step, tree, config, metrics={"ab_l1_lab": value}, force=True)
    manager.wait_until_finished()
  assert manager.all_steps() == [1, 3]
  manager.close()


# 2 steps of tiny_config with 2 filters per network, no samples or evaluation, written by the flat
# package before the subpackages (commit 360412f): checkpoints/2/ and the run's config.json.
PRE_LAYOUT_RUN = os.path.join(REPO, "tests", "data", "pre_layout_run")
PRE_LAYOUT_CONFIG = {
  "model.g_base_features": 2,
  "model.d_base_features": 2,
  "num_samples": 0,
  "eval_every_steps": 0,
  "checkpoint_every_steps": 2,
  "log_every_steps": 2,
  "sample_every_steps": 2,
}


def test_a_checkpoint_written_before_the_layout_change_resumes_and_colorizes(tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(PRE_LAYOUT_RUN, workdir)
  model = checkpointing.restore_for_inference(workdir)
  assert model.step == 2 and model.config.model.g_base_features == 2
  # The same command with a larger budget: it resumes at step 2, and trains on.
  resumed = loop.train_and_evaluate(tiny_config(**PRE_LAYOUT_CONFIG, total_steps=4), workdir)
  assert int(resumed.step) == 4 and _steps(workdir)[-1] == 4
  assert [r["start_step"] for r in _runs(workdir)] == [2]  # resumed, not started over
  before, after = _leaves(model.g_variables["params"]), _leaves(resumed.g_params)
  assert len(before) == len(after) > 0
  assert not any(np.array_equal(u, v) for u, v in zip(before, after))
  assert checkpointing.restore_for_inference(workdir).step == 4


def test_data_position_survives_a_batch_size_change():
  position = checkpointing.DataPosition(examples=40, batch_size=4, seed=0)
  assert resume.data_start_batch(position, 4) == 10
  assert resume.data_start_batch(position, 8) == 5
  assert resume.data_start_batch(position, 6) == 7  # 42: two examples skipped, none repeated


def test_stop_request_flag_is_set_by_the_signal_and_handlers_restored():
  previous = signal.getsignal(signal.SIGINT)
  with preemption.StopRequest() as stop:
    assert not stop.requested(1)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)  # Python runs the handler at the next bytecode boundary
    assert stop.requested(2) and stop.signal_name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is previous  # a second Ctrl-C acts at once
    assert signal.getsignal(signal.SIGTERM) == stop._handle
  assert signal.getsignal(signal.SIGTERM) is not stop._handle
