"""Precise BatchNorm statistics (config.precise_bn_batches, colorgan/models/precise_bn.py)."""

import functools
import json
import os

import jax
import numpy as np
import pytest

from colorgan import checkpointing
from colorgan import errors
from colorgan import models
from colorgan import parallel
from colorgan.data import pipeline
from colorgan.data import sources
from colorgan.evaluation import evaluator
from colorgan.models import precise_bn
from colorgan.training import interpolation
from colorgan.training import loop
from tests.conftest import leaves
from tests.conftest import tiny_config

STEPS = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("precise") / "run")
  config = tiny_config(
    total_steps=STEPS, precise_bn_batches=3, eval_every_steps=STEPS, num_samples=1
  )
  state = loop.train_and_evaluate(config, workdir)
  return config, workdir, state


def test_the_last_step_writes_statistics_that_every_inference_path_reads(run):
  config, workdir, state = run
  stats = precise_bn.read(workdir, STEPS)
  assert stats is not None and precise_bn.read(workdir, STEPS - 1) is None  # for that step only
  # The same estimate from a fresh stream of the run's first 3 training batches.
  source = sources.create_source(config)
  stream = pipeline.create_train_dataset(config, source.train, rows=(0, config.batch_size))
  batches = [b["image"] for b in stream.take(3).as_numpy_iterator()]
  final = jax.device_get(loop.inference_variables(state))
  want = interpolation.reestimate(models.create_generator(config), final, batches)
  assert all(np.array_equal(a, b) for a, b in zip(leaves(stats), leaves(want)))
  # Inference gets them; the state (and the checkpoint) keep the running averages.
  restored = checkpointing.restore_for_inference(workdir).g_variables
  assert all(np.array_equal(a, b) for a, b in zip(leaves(restored["batch_stats"]), leaves(stats)))
  running = leaves(state.g_batch_stats)
  assert len(running) == len(leaves(stats)) > 0
  assert not any(np.array_equal(a, b) for a, b in zip(running, leaves(stats)))


def test_the_runs_last_evaluation_used_them(run):
  """The end-of-run record is what --mode=evaluate computes from the checkpoint plus the file."""
  config, workdir, _ = run
  with open(os.path.join(workdir, "eval", f"step_{STEPS}.json")) as f:
    recorded = json.load(f)
  mesh = parallel.create_mesh(config)
  ev = evaluator.Evaluator(
    config,
    functools.partial(models.predict_ab, models.create_generator(config)),
    mesh,
    sources.create_source(config).eval,
  )
  variables = checkpointing.restore_for_inference(workdir).g_variables
  again = ev(jax.tree.map(lambda x: parallel.replicate(mesh, x), variables), STEPS)
  assert again["model"]["psnr"] == pytest.approx(recorded["model"]["psnr"], abs=1e-6)


def test_a_damaged_file_is_one_line_naming_it(run, tmp_path):
  _, workdir, _ = run
  (tmp_path / precise_bn.FILE).write_bytes(b"not a zip")
  with pytest.raises(errors.ConfigError) as e:
    precise_bn.read(str(tmp_path), STEPS)
  assert "\n" not in str(e.value) and str(tmp_path / precise_bn.FILE) in str(e.value)
