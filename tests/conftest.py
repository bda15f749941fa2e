"""Test set-up: compile fast (most tests run a handful of tiny steps) and share tiny configs."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # `configs` importable

import jax  # noqa: E402
import pytest  # noqa: E402

# XLA's optimizations cost far more compile time than they save on tiny shapes.
jax.config.update("jax_disable_most_optimizations", True)
# XLA:CPU's newer fusion emitters compile a tiny GAN step ~3x slower than the classic ones (5.6 -> 1.7
# CPU s); the flag is read when the backend starts, at the first computation.
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS"), "--xla_cpu_use_fusion_emitters=false"]))


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


HINTS_STEPS = 200  # enough for the tiny run to follow hints visibly (test_hints, test_serve)


@pytest.fixture(scope="session")
def hints_workdir(tmp_path_factory):
  """A tiny run trained with color hints until its colors move toward them: L1 only (no D step,
  the GAN's game only slows that down) at a high learning rate. Shared by the test files."""
  from colorgan.training import loop as train  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("hints") / "run")
  train.train_and_evaluate(tiny_config(**{
      "hints.enabled": True, "total_steps": HINTS_STEPS, "loss.gan": "none",
      "optim.g_learning_rate": 2e-3, "eval_every_steps": 0, "num_samples": 1,
      "checkpoint_every_steps": HINTS_STEPS, "log_every_steps": HINTS_STEPS,
      "sample_every_steps": HINTS_STEPS}), path)
  return path
