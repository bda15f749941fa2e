"""Checkpoints: exact resume, SIGTERM, kill -9 during a save, NaN stop/skip, config-change refusal.

The signal tests run the real command line in a subprocess (tiny smoke config) and resume in-process.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
from jax.experimental.compilation_cache import compilation_cache
import numpy as np
import orbax.checkpoint as ocp
import pytest

from colorgan import checkpointing
from colorgan import configuration
from colorgan import divergence
from colorgan import main
from colorgan import models
from colorgan import parallel
from colorgan import preemption
from colorgan import train
from tests.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 3  # steps before the interruption; the runs go to 2N


def _leaves(tree):
  keys_as_data = lambda x: (jax.random.key_data(x)  # noqa: E731
                            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
  return [np.asarray(keys_as_data(x)) for x in jax.tree.leaves(jax.device_get(tree))]


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


@pytest.fixture(scope="module", autouse=True)
def jax_cache(tmp_path_factory):
  """Most runs here compile the same tiny step: JAX's persistent cache compiles it once, also for
  the subprocesses (which get the same compiler flags as conftest's)."""
  path = str(tmp_path_factory.mktemp("jax_cache"))
  compilation_cache.reset_cache()
  jax.config.update("jax_compilation_cache_dir", path)
  yield path
  jax.config.update("jax_compilation_cache_dir", None)
  compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """2N steps in one go (workdir a) and N steps, then a rerun to 2N (workdir b)."""
  root = tmp_path_factory.mktemp("resume")
  a, b = str(root / "a"), str(root / "b")
  uninterrupted = train.train_and_evaluate(_config(total_steps=2 * N), a)
  first = train.train_and_evaluate(_config(total_steps=N), b)
  resumed = train.train_and_evaluate(_config(total_steps=2 * N), b)
  return a, b, uninterrupted, first, resumed


def test_resume_is_bit_identical_to_an_uninterrupted_run(runs):
  a, b, uninterrupted, first, resumed = runs
  assert int(first.step) == N and int(resumed.step) == int(uninterrupted.step) == 2 * N
  for name in ("g_params", "g_batch_stats", "g_opt_state", "d_params", "d_batch_stats",
               "d_opt_state", "step", "rng"):
    x, y = _leaves(getattr(uninterrupted, name)), _leaves(getattr(resumed, name))
    assert len(x) == len(y) > 0
    assert all(np.array_equal(u, v) for u, v in zip(x, y)), f"{name} differs after resuming"
  # Not trivially equal: the second half of the run changed every parameter.
  assert not any(np.array_equal(u, v) for u, v in zip(_leaves(first.g_params),
                                                      _leaves(resumed.g_params)))
  # Adam's moments are in the comparison above (2 networks x (mu, nu) x params + counts).
  assert len(_leaves(resumed.g_opt_state)) == 2 * len(_leaves(resumed.g_params)) + 1

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
  with pytest.raises(configuration.ConfigError) as e:
    train.train_and_evaluate(config, b)
  message = str(e.value)
  assert "\n" not in message
  assert "model.g_base_features (8 -> 16), optim.b1 (0.5 -> 0.9)" in message
  assert "total_steps" not in message and "allow_config_change=True" in message
  assert (_steps(b), len(_runs(b))) == before  # nothing written

  # The command line turns it into one line on stderr and exit status 2.
  argv = ["colorgan", f"--config={REPO}/configs/default.py:smoke", f"--workdir={b}",
          "--config.model.d_layers=2"]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
  main.FLAGS(argv)
  try:
    with pytest.raises(SystemExit) as e:
      main.main(argv[:1])
  finally:
    main.FLAGS.unparse_flags()
  assert e.value.code == 2
  stderr = capsys.readouterr().err
  errors = [line for line in stderr.splitlines() if line.startswith("colorgan: error: ")]
  assert len(errors) == 1 and "model.d_layers (3 -> 2)" in errors[0], stderr
  assert "Traceback" not in stderr
  assert checkpointing.config_changes(_config(), _config(total_steps=99, nan_policy="skip")) == (
      [], [])


def test_a_damaged_latest_checkpoint_is_one_line_naming_the_previous_step(runs, tmp_path):
  _, b, *_ = runs
  workdir = str(tmp_path / "damaged")
  shutil.copytree(b, workdir)
  state_dir = os.path.join(workdir, "checkpoints", str(2 * N), "state")
  for name in os.listdir(state_dir):  # the array data, not the metadata
    if name == "d" or name.startswith("ocdbt.process"):
      shutil.rmtree(os.path.join(state_dir, name))
  with pytest.raises(checkpointing.RestoreError) as e:
    train.train_and_evaluate(_config(total_steps=3 * N), workdir)
  message = str(e.value)
  assert "\n" not in message and message.startswith(f"{workdir}/checkpoints/{2 * N} cannot be")
  assert f"move it out of {workdir}/checkpoints to resume from step {N}" in message


def test_nonfinite_loss_stops_without_saving_and_skip_keeps_the_state(runs, tmp_path):
  _, b, _, _, resumed = runs
  # An injected NaN: the reconstruction weight, changed on resume (allow_config_change).
  workdir = str(tmp_path / "nan")
  shutil.copytree(b, workdir)
  config = _config(total_steps=3 * N, checkpoint_every_steps=1, log_every_steps=100,
                   allow_config_change=True)
  config.loss.l1_weight = float("nan")
  with pytest.raises(divergence.Diverged) as e:
    train.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert "\n" not in message
  assert f"non-finite loss or gradient at step {2 * N + 1}:" in message
  assert "g_loss=nan" in message and "g_recon_weighted=nan" in message
  assert "(finite: " in message and "d_loss=" in message.split("(finite: ")[1]
  assert f"last good checkpoint is {workdir}/checkpoints/{2 * N}" in message
  assert _steps(workdir) == [N, 2 * N]  # step 2N + 1 was due a checkpoint: never saved
  model = checkpointing.restore_for_inference(workdir)
  assert model.step == 2 * N
  assert all(np.array_equal(u, v) for u, v in zip(_leaves(model.g_variables["params"]),
                                                  _leaves(resumed.g_params)))

  # nan_policy=skip: every update is skipped (each step is non-finite), the step still advances.
  config.nan_policy = "skip"
  skipped = train.train_and_evaluate(config, workdir)
  assert int(skipped.step) == 3 * N
  for name in ("g_params", "g_batch_stats", "g_opt_state", "d_params", "d_batch_stats",
               "d_opt_state"):
    assert all(np.array_equal(u, v) for u, v in zip(_leaves(getattr(skipped, name)),
                                                    _leaves(getattr(resumed, name)))), name
  assert _steps(workdir)[-1] == 3 * N


# ----------------------------------------------------------------------------- subprocesses
class _Cli:
  """`python -m colorgan.main` in the background; its output collected line by line."""

  def __init__(self, workdir, *overrides, devices=1):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
               JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "colorgan.main", "--config=configs/default.py:smoke",
         f"--workdir={workdir}", "--config.total_steps=100000", *overrides],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def test_sigterm_saves_the_current_step_and_exits_0_then_resumes_on_1_device_of_4(tmp_path):
  workdir = str(tmp_path / "run")
  cli = _Cli(workdir, "--config.log_every_steps=1", "--config.checkpoint_every_steps=1000",
             "--config.sample_every_steps=100000", devices=4)
  cli.wait_for(lambda: any("step 3/100000" in line for line in cli.lines))
  cli.proc.send_signal(signal.SIGTERM)
  assert cli.finish() == 0, "\n".join(cli.lines[-20:])
  last = cli.lines[-1]
  assert last.startswith("colorgan: stopped by SIGTERM at step "), "\n".join(cli.lines[-20:])
  step = int(last.split("at step ")[1].split(":")[0])
  assert step >= 3
  assert f"saved {workdir}/checkpoints/{step}; rerun the same command to resume" in last
  assert _steps(workdir) == [step]  # not an interval step: saved because of the signal
  assert not any("Traceback" in line for line in cli.lines)

  # Saved from 4 devices, read on 1: the generator for inference (without optimizers) equals the
  # generator of the whole state restored into a 1-device run's structure.
  model = checkpointing.restore_for_inference(workdir)
  assert model.step == step and model.config.total_steps == 100000
  for leaf in jax.tree.leaves(model.g_variables):
    assert leaf.sharding.device_set == {jax.local_devices()[0]}
  config, mesh = _config(), parallel.create_mesh()
  with jax.set_mesh(mesh):
    manager = checkpointing.create_manager(workdir, config)
    whole = checkpointing.restore_latest(manager, train.init_train_state(
        config, models.create_generator(config), models.create_discriminator(config), mesh))
    manager.close()
  for name in ("params", "batch_stats"):
    x, y = _leaves(model.g_variables[name]), _leaves(getattr(whole, f"g_{name}"))
    assert len(x) == len(y) > 0 and all(np.array_equal(u, v) for u, v in zip(x, y))

  # The same command would resume; here in-process on 1 device, for one more step.
  resumed = train.train_and_evaluate(_config(total_steps=step + 1), workdir)
  assert int(resumed.step) == step + 1
  record = _runs(workdir)
  assert [(r["start_step"], r["jax"]["device_count"]) for r in record] == [(0, 4), (step, 1)]
  assert "--config.log_every_steps=1" in record[0]["command_line"]



def test_kill_9_during_a_save_resumes_from_the_last_committed_step(tmp_path):
  workdir = str(tmp_path / "run")
  directory = os.path.join(workdir, "checkpoints")
  cli = _Cli(workdir, "--config.log_every_steps=1000", "--config.checkpoint_every_steps=1",
             "--config.sample_every_steps=100000", "--config.keep_checkpoints=2")

  def tmp_dirs():
    try:
      return [n for n in os.listdir(directory) if ".orbax-checkpoint-tmp" in n]
    except FileNotFoundError:
      return []

  # Freeze the process while a save is being written, check it still is, then kill -9.
  killed_in = None
  while killed_in is None:
    cli.wait_for(lambda: tmp_dirs() and _steps(workdir))  # a save in flight after a committed one
    cli.proc.send_signal(signal.SIGSTOP)
    in_flight = tmp_dirs()
    if in_flight:
      cli.proc.kill()
      killed_in = in_flight
    else:
      cli.proc.send_signal(signal.SIGCONT)  # it committed meanwhile: try the next save
  cli.finish()
  assert cli.proc.returncode == -signal.SIGKILL
  uncommitted = int(killed_in[0].split(".")[0])
  committed = _steps(workdir)
  assert committed and max(committed) < uncommitted
  assert tmp_dirs() == killed_in  # the half-written step is still there ...

  # What the next start does (the SIGTERM test runs a whole resume): its manager deletes the
  # tmp directory, and the latest committed step restores.
  config = _config()
  mesh = parallel.create_mesh()
  with jax.set_mesh(mesh):
    state = train.init_train_state(config, models.create_generator(config),
                                   models.create_discriminator(config), mesh)
    manager = checkpointing.create_manager(workdir, config)
    assert not tmp_dirs()  # ... until the next run's manager deletes it
    restored = checkpointing.restore_latest(manager, state)
    manager.close()
  assert int(restored.step) == max(committed)
  assert not any(np.array_equal(u, v) for u, v in zip(_leaves(restored.g_params),
                                                      _leaves(state.g_params)))  # trained


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
  config.best_checkpoint_mode = "max"
  manager = checkpointing.create_manager(str(tmp_path / "max"), config)
  for step, value in ((1, 5.0), (2, 1.0), (3, 3.0)):
    checkpointing.save(manager, step, tree, config, metrics={"ab_l1_lab": value}, force=True)
    manager.wait_until_finished()
  assert manager.all_steps() == [1, 3]
  manager.close()


def test_data_position_survives_a_batch_size_change():
  position = checkpointing.DataPosition(examples=40, batch_size=4, seed=0)
  assert checkpointing.data_start_batch(position, 4) == 10
  assert checkpointing.data_start_batch(position, 8) == 5
  assert checkpointing.data_start_batch(position, 6) == 7  # 42: two examples skipped, none repeated


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
