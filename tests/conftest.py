"""Test set-up: compile fast (most tests run a handful of tiny steps) and share tiny configs."""

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # `configs` importable
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # before numpy loads OpenBLAS
  # Each xdist worker its share of the cores for BLAS: OpenBLAS threads that outnumber the cores
  # spin while they wait (two workers' sqrtm of FID's 2048 x 2048 matrices: 2.5x the CPU time).
  os.environ.setdefault(
    "OPENBLAS_NUM_THREADS",
    str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))),
  )

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# XLA's optimizations cost far more compile time than they save on tiny shapes.
jax.config.update("jax_disable_most_optimizations", True)
# XLA:CPU's newer fusion emitters compile a tiny GAN step ~3x slower than the classic ones (5.6 -> 1.7
# CPU s); the flag is read when the backend starts, at the first computation.
os.environ["XLA_FLAGS"] = " ".join(
  filter(None, [os.environ.get("XLA_FLAGS"), "--xla_cpu_use_fusion_emitters=false"])
)

# Most tests compile the same few tiny programs (train step, init, sampling, evaluation) again and
# again: JAX's persistent cache compiles each once per run, here, in every xdist worker and in the
# subprocesses (they inherit these variables): a quarter to a third less CPU time. Programs that
# compile in under 0.2 s (op by op) cost more to write than to compile. A size limit turns on JAX's
# lock on the folder, so no process reads an entry while another writes it.
CACHE_VARIABLES = {
  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
  "JAX_COMPILATION_CACHE_MAX_SIZE": str(4 << 30),
}
_OWN_CACHE = []  # the folder this process made (the xdist controller, or a run without xdist)


def pytest_configure(config):
  del config  # unused
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # xdist workers inherit the controller's
    _OWN_CACHE.append(tempfile.mkdtemp(prefix="colorgan-tests-jax-cache-"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE[0]
  for name, value in CACHE_VARIABLES.items():
    os.environ.setdefault(name, value)
  # jax read the environment when conftest imported it: the same values, set now.
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"] or None)
  jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
  )
  jax.config.update(
    "jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"])
  )


def pytest_unconfigure(config):
  del config  # unused
  for path in _OWN_CACHE:
    shutil.rmtree(path, ignore_errors=True)


# The files that take longest, longest first. `make test` hands whole files to its xdist workers in
# collection order (--dist loadfile --no-loadscope-reorder): started first, they end with the rest.
SLOWEST_FILES = (  # measured with --durations=0 (2 workers, 2 cores)
  "test_checkpointing.py",
  "test_hints.py",
  "test_parallel.py",
  "test_recipes.py",
  "test_fid.py",
  "test_export.py",
  "test_phases.py",
  "test_serve.py",
  "test_eval_metrics.py",
  "test_evaluate.py",
  "test_accelerator_check.py",
  "test_spectral_norm.py",
  "test_train.py",
  "test_fast_layers.py",
  "test_vividness.py",
  "test_resnet_unet.py",
  "test_video.py",
  "test_input_pipeline.py",
  "test_workdir.py",
  "test_classification.py",
)


def pytest_collection_modifyitems(config, items):
  if config.pluginmanager.hasplugin("xdist") and "PYTEST_XDIST_WORKER" in os.environ:
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order kept


def run_module(module: str, *args, devices: int | None = None, timeout: int = 300):
  """`python -m MODULE ARGS` from the repository, on CPU, compiling quickly (os.environ carries the
  shared compilation cache); devices sets JAX_NUM_CPU_DEVICES (None: as this process has it)."""
  env = dict(
    os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="true", TF_CPP_MIN_LOG_LEVEL="2"
  )
  if devices is not None:
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )


def leaves(tree) -> list:
  """Every leaf of a pytree as a host numpy array, random keys as their key data (to compare)."""
  as_data = lambda x: (  # noqa: E731
    jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  )
  return [np.asarray(as_data(x)) for x in jax.tree.leaves(jax.device_get(tree))]


def tiny_config(**overrides):
  """The default recipe shrunk to 32 px (U-Net depth 5) and 8 base filters."""
  from configs import default  # pylint: disable=g-import-not-at-top

  config = default.get_config("smoke")
  config.batch_size = 4
  config.total_steps = 4
  config.log_every_steps = config.sample_every_steps = config.checkpoint_every_steps = 2
  config.num_samples = 2
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for part in parents:
      target = target[part]
    target[leaf] = value
  return config


@pytest.fixture
def tiny():
  return tiny_config


def built_once(tmp_path_factory, name: str, build) -> str:
  """`build(path)` once per test run: under xdist the worker that asks first builds it (under a
  lock) and the others wait and reuse it. Only for what the tests read, never change."""
  root = tmp_path_factory.getbasetemp()
  if "PYTEST_XDIST_WORKER" in os.environ:
    root = root.parent  # the run's folder, above the workers' own
  path, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or its process dies
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)  # what a failed build left
      build(str(path))
      done.touch()
  return str(path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """The workdir of a 1-step tiny run: a checkpoint to colorize, export, serve from."""
  from colorgan.training import loop  # pylint: disable=g-import-not-at-top

  return built_once(
    tmp_path_factory,
    "tiny_run",
    lambda path: loop.train_and_evaluate(
      tiny_config(total_steps=1, eval_every_steps=0, num_samples=1), path
    ),
  )


HINTS_STEPS = 200  # enough for the tiny run to follow hints visibly (test_hints, test_serve)


@pytest.fixture(scope="session")
def hints_workdir(tmp_path_factory):
  """A tiny run trained with color hints until its colors move toward them: L1 only (no D step,
  the GAN's game only slows that down) at a high learning rate. Shared by the test files."""
  from colorgan.training import loop  # pylint: disable=g-import-not-at-top

  return built_once(
    tmp_path_factory,
    "hints_run",
    lambda path: loop.train_and_evaluate(
      tiny_config(
        **{
          "hints.enabled": True,
          "total_steps": HINTS_STEPS,
          "loss.gan": "none",
          "optim.g_learning_rate": 2e-3,
          "eval_every_steps": 0,
          "num_samples": 1,
          "checkpoint_every_steps": HINTS_STEPS,
          "log_every_steps": HINTS_STEPS,
          "sample_every_steps": HINTS_STEPS,
        }
      ),
      path,
    ),
  )


def pytest_terminal_summary(terminalreporter):
  """Skipped tests say why above the summary line, also without -rs (which lists each one): one
  line per reason, e.g. the browser tests on a machine without Playwright or chromium."""
  if "s" in terminalreporter.reportchars:  # -rs, -ra, -rA: pytest lists them itself
    return
  reasons = {}
  for report in terminalreporter.stats.get("skipped", []):
    longrepr = report.longrepr  # (path, line, "Skipped: reason"); a list when it came from xdist
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:
      reason = f"{str(longrepr[2]).removeprefix('Skipped: ')} ({os.path.basename(longrepr[0])})"
      reasons[reason] = reasons.get(reason, 0) + 1
  for reason, count in reasons.items():
    terminalreporter.write_line(f"{count} skipped: {reason}", yellow=True)


@pytest.fixture
def read_only_folder(tmp_path):
  """A folder no file can be written in: mode 555 for a user; for root, who writes anywhere else,
  sysfs (its folders take no new file)."""
  if os.geteuid() != 0:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    yield str(folder)
    folder.chmod(0o755)
  elif os.path.isdir("/sys/kernel"):
    yield "/sys"
  else:
    pytest.skip("root without sysfs: no folder here refuses root's writes")
