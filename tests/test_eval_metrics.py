"""FID, KID and LPIPS in evaluation (config.eval.*), and checkpoints ranked by an evaluation metric.

A tiny run evaluates 6 bundled photos at 32 px with random-weight pytorch-fid Inception and LPIPS
weights (converted from their PyTorch formats). The gray baseline is reproducible outside the run, so
its KID and LPIPS are recomputed with the references: pytorch-fid's InceptionV3 (its own resize from
32 to 299 px) and torch-fidelity's KID, and the lpips package.
"""

import functools
import importlib.util
import json
import logging
import os

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import torch

from colorgan import color
from colorgan import configuration
from colorgan import convert_weights
from colorgan import errors
from colorgan import models
from colorgan import parallel
from colorgan.data import pipeline
from colorgan.data import sources
from colorgan.evaluation import evaluator
from colorgan.evaluation import inception
from colorgan.training import loop
from tests import torch_reference
from tests.conftest import REPO
from tests.conftest import tiny_config

_spec = importlib.util.spec_from_file_location("sweep", os.path.join(REPO, "launch", "sweep.py"))
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)

NUM_IMAGES = 6


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  root = tmp_path_factory.mktemp("weights")
  config = tiny_config()
  paths = sources.create_source(config).eval.first(NUM_IMAGES)
  crops = pipeline.load_eval_images(config, paths, NUM_IMAGES)
  pth, npz = str(root / "inception.pth"), str(root / "inception.npz")
  torch_reference.save_random_fid_inception(
    pth, seed=1, calibration=inception.preprocess(crops).transpose(0, 3, 1, 2)
  )
  convert_weights.convert_inception(pth, npz)
  torch.manual_seed(1)
  lpips_model = torch_reference.lpips_reference()
  alexnet, heads, lpips_npz = str(root / "alex.pth"), str(root / "lin.pth"), str(root / "lp.npz")
  torch_reference.save_lpips_pths(lpips_model, alexnet, heads)
  convert_weights.convert_lpips(alexnet, heads, lpips_npz)
  return dict(
    inception_pth=pth, inception=npz, lpips=lpips_npz, lpips_model=lpips_model, crops=crops
  )


@pytest.fixture(scope="module")
def run(weights, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run") / "run")
  config = tiny_config(
    total_steps=2, eval_every_steps=2, eval_batch_size=4, num_eval_images=NUM_IMAGES
  )
  config.eval.inception_weights = weights["inception"]
  config.eval.lpips_weights = weights["lpips"]
  configuration.validate(config)
  loop.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "eval", "step_2.json")) as f:
    return config, workdir, json.load(f)


def test_evaluation_adds_fid_kid_and_lpips_for_model_and_baseline(run):
  _, workdir, result = run
  assert result["fid_backend"] == "pytorch-fid-inception-2015-12-05"
  assert result["fid_reference"] == "eval split ground truth"
  for who in ("model", "baseline"):
    values = result[who]
    assert {"psnr", "ssim", "fid", "kid", "lpips"} <= set(values)
    assert values["fid"] > 0 and np.isfinite(values["kid"]) and 0 < values["lpips"] < 1
  tags = set()
  for events in tf.io.gfile.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(events):
      tags.update(v.tag for v in event.summary.value)
  assert {
    f"eval/{who}/{k}" for who in ("model", "baseline") for k in ("fid", "kid", "lpips")
  } <= tags
  # The sweep table reads the same file: FID, KID and LPIPS become columns.
  rows = sweep.results([dict(name="run", workdir=workdir)])
  table = sweep.format_table(rows)
  assert "model.fid" in table and "baseline.lpips" in table


def test_baseline_kid_and_lpips_match_the_references(run, weights):
  """The gray crops (ab = 0) against the crops: pytorch-fid + torch-fidelity, and lpips."""
  _, _, result = run
  crops = weights["crops"]
  l, _ = color.rgb_uint8_to_model_lab(jnp.asarray(crops))
  gray = np.asarray(evaluator.to_uint8(color.model_lab_to_rgb(l, jnp.zeros(l.shape[:3] + (2,)))))
  model = torch_reference.pytorch_fid_model(weights["inception_pth"])
  with torch.no_grad():
    gray_features, truth_features = (
      model(torch_reference.torch_images(x))[0][:, :, 0, 0].double() for x in (gray, crops)
    )
    lpips_values = weights["lpips_model"](
      torch_reference.torch_images(gray), torch_reference.torch_images(crops), normalize=True
    )
  from torch_fidelity import metric_kid  # pylint: disable=g-import-not-at-top

  kid = metric_kid.kid_features_to_metric(
    gray_features, truth_features, kid_subset_size=NUM_IMAGES, verbose=False
  )
  np.testing.assert_allclose(
    result["baseline"]["kid"], kid["kernel_inception_distance_mean"], rtol=1e-3
  )
  np.testing.assert_allclose(result["baseline"]["lpips"], float(lpips_values.mean()), rtol=1e-4)


def _predict(config):
  return functools.partial(models.predict_ab, models.create_generator(config))


def test_evaluator_names_the_keys_that_turn_the_metrics_on(caplog):
  config = tiny_config()
  mesh = parallel.create_mesh()
  source = sources.create_source(config)
  with caplog.at_level(logging.INFO, logger="absl"):  # colorgan logs through absl's logger
    scorer = evaluator.Evaluator(config, _predict(config), mesh, source.eval)
  lines = [r.getMessage() for r in caplog.records if "config.eval." in r.getMessage()]
  assert len(lines) == 1 and "config.eval.inception_weights" in lines[0]
  assert "config.eval.lpips_weights" in lines[0] and scorer.features is None


def test_eval_weights_that_are_not_what_they_claim_are_one_line_config_errors(weights, tmp_path):
  config = tiny_config()
  config.eval.inception_weights = weights["lpips"]  # the LPIPS file given as Inception weights
  mesh = parallel.create_mesh()
  with pytest.raises(
    errors.ConfigError, match="config.eval.inception_weights: .* does not hold the FID Inception"
  ):
    evaluator.Evaluator(config, _predict(config), mesh, sources.create_source(config).eval)
  config.eval.inception_weights = str(tmp_path / "none.npz")
  with pytest.raises(errors.ConfigError, match="inception_weights=.*is not a .npz file"):
    configuration.validate(config)


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(best_checkpoint_metric="eval/fid"), "needs config.eval.inception_weights"),
    (dict(best_checkpoint_metric="eval/lpips"), "needs config.eval.lpips_weights"),
    (dict(best_checkpoint_metric="eval/sharpness"), "is not an evaluation metric"),
    (
      dict(best_checkpoint_metric="eval/psnr", eval_every_steps=3),
      "must be a multiple of eval_every_steps=3",
    ),
    (dict(best_checkpoint_metric="eval/psnr", eval_every_steps=0), "eval_every_steps=0"),
    ({"eval.fid_reference": "ref.npz"}, "is not a .npz file"),
  ],
)
def test_eval_config_mistakes(overrides, message):
  config = tiny_config(**overrides)
  with pytest.raises(errors.ConfigError, match=message):
    configuration.validate(config)


def test_best_checkpoint_by_an_evaluation_metric(tmp_path):
  # Evaluations at 2, 4 and 6; one latest checkpoint kept, and the best by the model's ab_l1 in the
  # evaluation at each checkpoint's step.
  config = tiny_config(
    total_steps=6,
    eval_every_steps=2,
    checkpoint_every_steps=2,
    log_every_steps=3,
    keep_checkpoints=1,
    num_eval_images=4,
    eval_batch_size=4,
    best_checkpoint_metric="eval/ab_l1",
    best_checkpoint_mode="max",
  )
  configuration.validate(config)  # log_every_steps needs not divide checkpoint_every_steps here
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  evaluations = {}
  for step in (2, 4, 6):
    with open(os.path.join(workdir, "eval", f"step_{step}.json")) as f:
      evaluations[step] = json.load(f)["model"]["ab_l1"]
  best = max(evaluations, key=evaluations.get)
  assert best != 6, evaluations  # the config is chosen so that the best is not also the latest
  kept = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert kept == [best, 6], (kept, evaluations)


def test_ranking_metrics_come_from_the_evaluation_at_the_step():
  result = {"model": {"psnr": 20.0, "fid": 31.5, "kid": None, "lpips": float("nan")}}
  assert loop.checkpoint_ranking({"ab_l1_lab": 3.0}, result) == {
    "ab_l1_lab": 3.0,
    "eval/psnr": 20.0,
    "eval/fid": 31.5,
  }
  assert loop.checkpoint_ranking(None, None) is None


@pytest.mark.parametrize(
  "protocol, name, split",
  [("imagenet_val", "imagenet2012", "validation"), ("coco_val", "coco/2017", "validation")],
)
def test_protocol_configs(protocol, name, split, weights, monkeypatch, tmp_path):
  from configs import protocols  # pylint: disable=g-import-not-at-top

  config = protocols.get_config(protocol)
  assert (config.data.source, config.data.tfds_name, config.data.eval_split) == (
    "tfds",
    name,
    split,
  )
  assert config.image_size == 256 and config.data.resize_mode == "resize"
  assert config.num_eval_images == 0  # every photo of the split
  monkeypatch.chdir(tmp_path)
  with pytest.raises(errors.ConfigError, match="inception_weights=weights/.*is not a .npz"):
    configuration.validate(config)  # not converted yet: one line saying how
  os.makedirs(tmp_path / "weights")
  for key in ("inception_weights", "lpips_weights"):
    os.symlink(
      weights["inception" if key == "inception_weights" else "lpips"], tmp_path / config.eval[key]
    )
  configuration.validate(config)
