"""Data parallelism: 8 devices == 1 device, 2 processes x 2 devices == 1 process x 4, bf16, mesh errors.

The device counts of a JAX process are fixed when its backend starts (this one has a single CPU
device), so multi-device runs happen in subprocesses: tests/parallel_driver.py trains on 1, 4 and 8
devices of one process, and two `python -m colorgan.main` processes train together over loopback
through jax.distributed. All three start together (module fixture) and run side by side.
"""

import glob
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorgan import checkpointing
from colorgan import configuration
from colorgan import errors
from colorgan.data import pipeline
from colorgan.data import sources
from colorgan import models
from colorgan import parallel
from colorgan.training import step as step_lib
from tests import parallel_driver
from tests.conftest import REPO, tiny_config

# One run, three ways: the driver's meshes and the 2-process CLI run train exactly this config.
RUN = {
  "batch_size": 8,
  "total_steps": 3,
  "log_every_steps": 3,
  "sample_every_steps": 3,
  "checkpoint_every_steps": 3,
  "num_samples": 2,
}
TIMEOUT_S = 900  # the whole suite shares 2 cores; a hang (a peer that died) ends here
# The 2-process run takes 1-3 minutes beside the rest of the suite. XLA:CPU's gloo collectives with
# 2 devices per process have deadlocked once here (in the final evaluation, both processes idle,
# one in GlooCommunicator::AllReduce): a run making no progress for this long starts over, once.
TWO_PROCESS_TIMEOUT_S = 420


def _env(**extra) -> dict[str, str]:
  return dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    TF_CPP_MIN_LOG_LEVEL="2",
    **extra,
  )


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class _Launched:
  """Subprocesses started together; `result(name)` waits for one and fails the test on error."""

  def __init__(self):
    self.procs: dict[str, subprocess.Popen] = {}
    self.results: dict[str, tuple[int, str]] = {}

  def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
    self.procs[name] = subprocess.Popen(
      args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

  def result(self, name: str) -> str:
    if name not in self.results:
      try:
        out, _ = self.procs[name].communicate(timeout=TIMEOUT_S)
      except subprocess.TimeoutExpired:
        self.stop()
        out, _ = self.procs[name].communicate()
      self.results[name] = (self.procs[name].returncode, out)
    code, out = self.results[name]
    assert code == 0, f"{name} exited with {code}:\n{out[-6000:]}"
    return out

  def stop(self, names=None) -> None:
    for name, proc in self.procs.items():
      if (names is None or name in names) and proc.poll() is None:
        proc.kill()
        proc.communicate()

  def start_two_processes(self, tmp) -> None:
    """RUN through the command line in 2 processes of 2 CPU devices; each attempt in its own
    workdir, on a fresh port."""
    self.attempt = getattr(self, "attempt", 0) + 1
    self.workdir = str(tmp / f"two_processes_{self.attempt}")
    port = _free_port()
    for i in range(2):
      self.start(
        f"process {i}",
        [
          sys.executable,
          "-m",
          "colorgan.main",
          "--config=configs/default.py:smoke",
          f"--workdir={self.workdir}",
          f"--coordinator_address=127.0.0.1:{port}",
          "--num_processes=2",
          f"--process_id={i}",
          *[f"--config.{k}={v}" for k, v in RUN.items()],
        ],
        _env(JAX_NUM_CPU_DEVICES="2"),
      )

  def two_process_logs(self, tmp) -> list[str]:
    """Both processes' output, once both exit 0. A run that hangs is killed and started over once
    (with a warning that shows the hang); a second hang, or any failure, fails the test."""
    names = ("process 0", "process 1")
    deadline = time.time() + TWO_PROCESS_TIMEOUT_S
    try:
      for name in names:  # their output is a few kB: a pipe never fills and blocks the other
        out, _ = self.procs[name].communicate(timeout=max(1.0, deadline - time.time()))
        self.results[name] = (self.procs[name].returncode, out)
    except subprocess.TimeoutExpired:
      outputs = []
      for name in names:
        self.procs[name].kill()
        outputs.append(self.procs[name].communicate()[0][-1500:])
      self.results = {k: v for k, v in self.results.items() if k not in names}
      hung = "\n".join(outputs)
      if self.attempt > 1:
        raise AssertionError(f"the 2-process run hung twice; the last time:\n{hung}") from None
      warnings.warn(
        f"the 2-process run hung for {TWO_PROCESS_TIMEOUT_S} s (a gloo collective "
        f"deadlock?); starting it over. Its output:\n{hung}",
        stacklevel=2,
      )
      self.start_two_processes(tmp)
      return self.two_process_logs(tmp)
    return [self.result(name) for name in names]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("parallel")
  runs = _Launched()
  runs.driver_out = str(tmp / "meshes.npz")
  runs.start(
    "driver",
    [
      sys.executable,
      os.path.join(REPO, "tests", "parallel_driver.py"),
      runs.driver_out,
      json.dumps(RUN),
      "1",
      "8",
      "4",
    ],
    _env(),
  )
  runs.tmp = tmp
  runs.start_two_processes(tmp)
  yield runs
  runs.stop()


@pytest.fixture(scope="module")
def one_device():
  """RUN's mesh in this 1-device process, its initial GanState and its first global batches."""
  config = tiny_config(**RUN)
  mesh = parallel.create_mesh(config)
  with jax.set_mesh(mesh):
    state = step_lib.init_train_state(
      config, models.create_generator(config), models.create_discriminator(config), mesh
    )
  source = sources.create_source(config)
  batches = list(
    itertools.islice(
      pipeline.create_train_dataset(
        config, source.train, rows=(0, config.batch_size)
      ).as_numpy_iterator(),
      RUN["total_steps"],
    )
  )
  return mesh, state, batches


def _meshes(runs: _Launched) -> dict[str, dict[str, np.ndarray]]:
  runs.result("driver")
  by_mesh = {}
  with np.load(runs.driver_out) as npz:
    for key in npz.files:
      mesh, leaf = key.split("|", 1)
      by_mesh.setdefault(mesh, {})[leaf] = npz[key]
  return by_mesh


def _assert_same_state(
  actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], *, rtol: float
) -> None:
  """Every leaf equal: integers and keys exactly, floats to ||a - e|| <= rtol * ||e|| per leaf.

  Per leaf, not per element: Adam divides each gradient by its own running RMS, so a weight whose
  gradient is ~0 can move by a visible fraction of the learning rate on a last-bit difference.
  """
  assert sorted(actual) == sorted(expected)
  for key, e in expected.items():
    a = actual[key]
    assert a.shape == e.shape and a.dtype == e.dtype, key
    if np.issubdtype(e.dtype, np.floating):
      error = np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30)
      assert error <= rtol, f"{key}: relative error {error:.2e} > {rtol:.0e}"
    else:
      np.testing.assert_array_equal(a, e, err_msg=key)


def test_8_devices_train_like_1_device(launched):
  """Sync-BN: BatchNorm statistics over the global batch, so splitting it changes nothing."""
  meshes = _meshes(launched)
  one, eight = meshes["1"], meshes["8"]
  assert one["metrics"].shape == (RUN["total_steps"], len(step_lib.METRIC_NAMES))
  np.testing.assert_allclose(eight["metrics"], one["metrics"], rtol=1e-5)
  _assert_same_state(eight, one, rtol=1e-5)
  # Three real updates: the losses moved, and BatchNorm's running means left their initial zeros.
  assert int(one[".step"]) == RUN["total_steps"]
  assert len({tuple(m) for m in one["metrics"]}) == RUN["total_steps"]
  assert np.abs(one[".g_batch_stats['down1_bn']['mean']"]).min() > 0


def test_2_processes_train_like_1_process_and_share_one_checkpoint(launched, one_device):
  for i, log in enumerate(launched.two_process_logs(launched.tmp)):
    assert f"JAX process {i} of 2: 2 local of 4 cpu device(s)" in log
  workdir = launched.workdir
  # One checkpoint, written by both processes together (each commits its own shard files)...
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]
  state_dir = os.path.join(workdir, "checkpoints", "3", "state")
  assert sorted(glob.glob(os.path.join(state_dir, "ocdbt.process_*"))) == [
    os.path.join(state_dir, "ocdbt.process_0"),
    os.path.join(state_dir, "ocdbt.process_1"),
  ]
  # ... while TensorBoard events and samples come from process 0 alone.
  assert len(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))) == 1
  assert os.listdir(os.path.join(workdir, "samples")) == ["step_0000003.png"]

  expected = _meshes(launched)["4"]
  # Inference restore of the generator, in this 1-device process.
  model = checkpointing.restore_for_inference(workdir)
  assert model.step == 3 and model.config.batch_size == RUN["batch_size"]
  generator = parallel_driver.state_leaves(
    {"g_params": model.g_variables["params"], "g_batch_stats": model.g_variables["batch_stats"]}
  )
  generator = {re.sub(r"^\['(\w+)'\]", r".\1", k): v for k, v in generator.items()}
  _assert_same_state(
    generator,
    {k: v for k, v in expected.items() if k.startswith((".g_params", ".g_batch_stats"))},
    rtol=1e-5,
  )

  # Full restore of the GanState (both networks, optimizer states, step, rng).
  mesh, initial, _ = one_device
  with jax.set_mesh(mesh):
    manager = checkpointing.create_manager(workdir, tiny_config(**RUN))
    state = checkpointing.restore_latest(manager, initial)
    manager.close()
  restored = parallel_driver.state_leaves(state)
  _assert_same_state(restored, {k: v for k, v in expected.items() if k != "metrics"}, rtol=1e-5)


@pytest.mark.slow
def test_a_model_axis_replicates_and_changes_nothing(tmp_path):
  out = str(tmp_path / "meshes.npz")
  subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, "tests", "parallel_driver.py"),
      out,
      json.dumps(RUN),
      "1",
      "4x2",
    ],
    cwd=REPO,
    env=_env(),
    check=True,
    timeout=TIMEOUT_S,
  )
  with np.load(out) as npz:
    by_mesh = {
      m: {k.split("|", 1)[1]: npz[k] for k in npz.files if k.startswith(m + "|")}
      for m in ("1", "4x2")
    }
  _assert_same_state(by_mesh["4x2"], by_mesh["1"], rtol=1e-5)


def test_bfloat16_activations_with_float32_state_and_losses(one_device):
  """bf16 convolutions throughout the step; params, optimizer and BN statistics stay float32."""
  # create_train_state gives the same state under either dtype (float32 parameters, same keys).
  mesh, initial, batches = one_device
  metrics, hlo = {}, {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(**RUN, compute_dtype=dtype)
    gen, disc = models.create_generator(config), models.create_discriminator(config)
    with jax.set_mesh(mesh):
      state = jax.tree.map(jnp.copy, initial)  # the step donates it
      step_fn = step_lib.make_train_step(config, gen, disc, mesh)
      hlo[dtype] = step_fn.lower(state, parallel.global_batch(mesh, batches[0])).as_text()
      metrics[dtype] = []
      for batch in batches:
        state, step_metrics = step_fn(state, parallel.global_batch(mesh, batch))
        computed = step_metrics.compute()
        assert {str(v.dtype) for v in computed.values()} == {"float32"}
        metrics[dtype].append([float(computed[k]) for k in step_lib.METRIC_NAMES])
    leaves = parallel_driver.state_leaves(state)
    dtypes = {k: str(v.dtype) for k, v in leaves.items() if k not in (".step", ".rng")}
    floats = [k for k, d in dtypes.items() if d == "float32"]
    assert all(d == "float32" or k.endswith(".count") for k, d in dtypes.items()), dtypes
    for part in ("g_params", "d_params", "g_batch_stats", ".mu[", ".nu["):
      assert any(part in k for k in floats), part

  # Operand types of every convolution and matrix product in the lowered step (forward and backward
  # passes): the fast layers are dot_generals, flax's are convolutions. The Lab conversion's 3x3
  # color matrix stays float32 on purpose.
  pattern = r"stablehlo\.(?:convolution|dot_general).*: \(tensor<\S+x(\w+)>, tensor<(\S+)x(\w+)>\)"
  operands = {
    dtype: [(lhs, rhs) for lhs, rhs_shape, rhs in re.findall(pattern, text) if rhs_shape != "3x3"]
    for dtype, text in hlo.items()
  }
  assert len(operands["float32"]) == len(operands["bfloat16"]) > 20
  assert set(itertools.chain(*operands["float32"])) == {"f32"}
  assert set(itertools.chain(*operands["bfloat16"])) == {"bf16"}
  np.testing.assert_allclose(metrics["bfloat16"], metrics["float32"], rtol=2e-2, atol=1e-6)


@pytest.mark.parametrize(
  "args, devices, expected",
  [
    (
      ["--config.batch_size=6"],
      "4",
      "config.batch_size=6 does not divide evenly over the 4 devices of the mesh's data axis: "
      "use a multiple of 4, e.g. 4 or 8",
    ),
    (["--config.mesh.data=3"], "4", "config.mesh.data=3 x config.mesh.model=1 != 4 devices"),
    (
      ["--distributed=off", "--num_processes=2"],
      "1",
      "--num_processes needs --distributed=auto or on, not off",
    ),
  ],
)
def test_mistakes_fail_at_start_in_one_line(tmp_path, args, devices, expected):
  workdir = tmp_path / "run"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "colorgan.main",
      "--config=configs/default.py:smoke",
      f"--workdir={workdir}",
      *args,
    ],
    cwd=REPO,
    env=_env(JAX_NUM_CPU_DEVICES=devices),
    capture_output=True,
    text=True,
    timeout=TIMEOUT_S,
  )
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.startswith("colorgan: error:")]
  assert len(lines) == 1 and expected in lines[0], result.stderr
  assert "Traceback" not in result.stderr
  assert not workdir.exists()  # nothing written


@pytest.mark.parametrize(
  "data, model, devices, expected",
  [
    (-1, 1, 8, (8, 1)),
    (-1, 2, 8, (4, 2)),
    (2, -1, 8, (2, 4)),
    (4, 2, 8, (4, 2)),
    (1, 1, 1, (1, 1)),
    (-1, 3, 8, "config.mesh.model=3 does not divide the 8 devices"),
    (4, 4, 8, "config.mesh.data=4 x config.mesh.model=4 != 8 devices"),
    (0, 1, 8, "config.mesh.data=0 must be a positive number of devices or -1"),
    (-1, -1, 8, "both -1"),
  ],
)
def test_mesh_shape(data, model, devices, expected):
  config = tiny_config(**{"mesh.data": data, "mesh.model": model})
  if isinstance(expected, tuple):
    assert parallel.mesh_shape(config, devices) == expected
  else:
    with pytest.raises(errors.ConfigError, match=re.escape(expected)):
      configuration.validate(config)  # the axes' values alone (a run checks them first)
      parallel.mesh_shape(config, devices)  # and then against the devices


@pytest.mark.parametrize(
  "environ, expected",
  [
    ({}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_STEP_NODELIST": "n1"}, None),
    (
      {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_STEP_NODELIST": "n[1-2]"},
      "SLURM (16 tasks)",
    ),
    ({"SLURM_NTASKS": "16"}, None),  # the batch script itself, outside srun
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "Open MPI (4 ranks)"),
    ({"TPU_WORKER_HOSTNAMES": "t1"}, None),
    ({"TPU_WORKER_HOSTNAMES": "t1,t2,t3,t4"}, "Cloud TPU (4 workers)"),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "JAX_COORDINATOR_ADDRESS"),
  ],
)
def test_multiprocess_launcher_from_environment(environ, expected):
  assert parallel.multiprocess_launcher(environ) == expected
