"""Evaluation of a tiny trained model: in the training loop, and as --mode=evaluate over 2 devices."""

import importlib.util
import json
import os
import shutil

import numpy as np
from PIL import Image
import pytest
import skimage.color
import skimage.metrics
import tensorflow as tf
import tensorflow_datasets as tfds

from colorgan import configuration
from colorgan import errors
from colorgan import fileio
from colorgan.data import pipeline
from colorgan.data import sources
from colorgan.evaluation import eval_data
from colorgan.evaluation import evaluator
from colorgan.evaluation import records
from colorgan.training import loop
from tests.conftest import run_module
from tests.conftest import REPO
from tests.conftest import tiny_config

_spec = importlib.util.spec_from_file_location("sweep", os.path.join(REPO, "launch", "sweep.py"))
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)

KEYS = {"psnr", "ssim", "colorfulness", "delta_colorfulness", "auc", "ab_l1"}


def _cli(*args, devices=1):
  return run_module("colorgan.main", *args, devices=devices)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """2 training steps; the loop evaluates at step 2 on 6 of the 8 bundled photos in batches of 4
  (the second batch has 2 padding rows)."""
  workdir = str(tmp_path_factory.mktemp("eval") / "run")
  config = tiny_config(total_steps=2, eval_every_steps=2, eval_batch_size=4, num_eval_images=6)
  loop.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "eval", "step_2.json")) as f:
    return config, workdir, json.load(f)


def test_training_writes_the_eval_json_and_tensorboard_scalars(run):
  _, workdir, result = run
  assert result["step"] == 2 and result["num_images"] == 6 and result["image_size"] == 32
  for who in ("model", "baseline"):
    assert set(result[who]) == KEYS
    values = result[who]
    assert 5 < values["psnr"] < 60 and 0 < values["ssim"] <= 1 and 0 < values["auc"] <= 1
    assert values["ab_l1"] > 0 and values["colorfulness"] >= 0
  assert result["baseline"]["colorfulness"] < 1  # gray: no color but rounding
  assert result["ground_truth"]["colorfulness"] > 10  # the bundled photos are colorful
  np.testing.assert_allclose(
    result["baseline"]["delta_colorfulness"],
    result["ground_truth"]["colorfulness"] - result["baseline"]["colorfulness"],
    rtol=1e-4,
  )
  tags = set()
  for events in tf.io.gfile.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(events):
      tags.update(v.tag for v in event.summary.value)
  assert {f"eval/{who}/{k}" for who in ("model", "baseline") for k in KEYS} <= tags


def test_gray_baseline_matches_skimage(run):
  # The baseline, recomputed with skimage alone: the same center crops, ab set to 0 in skimage's Lab.
  config, _, result = run
  paths = sources.create_source(config).eval.first(6)
  crops = pipeline.load_eval_images(config, paths, 6) / 255.0
  psnrs, l1s = [], []
  for crop in crops:
    lab = skimage.color.rgb2lab(crop)
    gray = np.round(skimage.color.lab2rgb(lab * [1, 0, 0]) * 255) / 255.0
    psnrs.append(skimage.metrics.peak_signal_noise_ratio(crop, gray, data_range=1))
    l1s.append(np.abs(skimage.color.rgb2lab(gray)[..., 1:] - lab[..., 1:]).mean())
  np.testing.assert_allclose(result["baseline"]["psnr"], np.mean(psnrs), atol=0.02)
  np.testing.assert_allclose(result["baseline"]["ab_l1"], np.mean(l1s), rtol=2e-3)


def test_evaluate_mode_on_two_devices_reproduces_the_training_eval(run):
  config, workdir, in_training = run
  result = _cli("--mode=evaluate", f"--workdir={workdir}", "--config.eval_batch_size=4", devices=2)
  assert result.returncode == 0, result.stderr
  printed = json.loads(result.stdout.strip().splitlines()[-1])  # the JSON is the last line
  with open(os.path.join(workdir, "eval", "step_2.json")) as f:
    assert json.load(f) == printed
  assert printed["num_images"] == 6 and printed["step"] == 2  # the run's own config was used
  for who in ("model", "baseline"):
    for key in KEYS:
      np.testing.assert_allclose(
        printed[who][key], in_training[who][key], rtol=1e-4, err_msg=f"{who}.{key}"
      )


def test_evaluate_mode_mistakes_are_one_line_errors(run, tmp_path):
  result = _cli("--mode=evaluate", f"--workdir={run[1]}", "--step=7")
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.startswith("colorgan: error:")]
  assert len(lines) == 1 and "has no checkpoint at step 7: it has steps 2" in lines[0], (
    result.stderr
  )
  assert "Traceback" not in result.stderr
  result = _cli("--mode=evaluate", f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert f"--workdir={tmp_path} holds no config.json" in result.stderr


def test_evaluate_checkpoint_on_a_tfds_eval_split(run, tmp_path):
  # coco256 / imagenet256 runs evaluate a TFDS split, which is no list of paths.
  workdir = str(tmp_path / "run")
  shutil.copytree(run[1], workdir)
  config = tiny_config(
    **{
      "data.source": "tfds",
      "data.tfds_name": "imagenette/320px-v2",
      "data.eval_split": "validation",
      "eval_batch_size": 4,
      "num_eval_images": 6,
    }
  )
  with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
    result = evaluator.evaluate_checkpoint(config, workdir)
  assert result["step"] == 2 and result["num_images"] == 6
  assert 5 < result["model"]["psnr"] < 60 and 0 < result["baseline"]["ssim"] <= 1
  with open(os.path.join(workdir, "eval", "imagenette_320px-v2_validation", "step_2.json")) as f:
    assert json.load(f)["num_images"] == 6
  assert result["data"] == {
    "source": "tfds",
    "tfds_name": "imagenette/320px-v2",
    "split": "validation",
  }


def test_a_read_only_workdir_is_evaluated_without_saving(run, tmp_path, monkeypatch, caplog):
  workdir = str(tmp_path / "run")
  shutil.copytree(run[1], workdir, ignore=shutil.ignore_patterns("eval", "events.*"))

  def read_only(*args, **kwargs):
    raise OSError(30, "Read-only file system")

  monkeypatch.setattr(fileio, "open", read_only, raising=False)
  config = tiny_config(eval_batch_size=4, num_eval_images=6)
  result = evaluator.evaluate_checkpoint(config, workdir)
  assert result["num_images"] == 6 and result["model"]["psnr"] > 5
  assert not os.path.exists(os.path.join(workdir, "eval"))
  assert "cannot be written: Read-only file system" in caplog.text


def test_json_has_no_infinities():
  line = records.to_json({"step": 1, "model": {"psnr": float("inf")}})
  assert json.loads(line) == {"step": 1, "model": {"psnr": None}}


# ----------------------------------------------------------------------------- what was scored
def _read(path):
  with open(path) as f:
    return json.load(f)


def test_every_eval_json_records_its_data(run):
  _, workdir, result = run
  assert result["data"] == {"source": "bundled", "split": "all"}
  assert result["num_images"] == 6 and result["image_size"] == 32
  # The sweep table reads the run's own record: the data (strings) adds no column to it.
  step, metrics = sweep.last_eval(workdir)
  assert step == 2 and not any(k.startswith("data") for k in metrics)
  assert metrics["model.psnr"] == result["model"]["psnr"] and metrics["num_images"] == 6


def test_evaluate_input_scores_every_photo_beside_the_runs_record(run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(run[1], workdir)
  own = os.path.join(workdir, "eval", "step_2.json")
  with open(own, "rb") as f:
    before = f.read()
  photos = tmp_path / "My photos"
  for i, name in enumerate(("astronaut.png", "sub/chelsea.jpg", "coffee.png")):
    os.makedirs(os.path.dirname(photos / name), exist_ok=True)
    Image.open(sources.bundled_photo_paths()[i]).convert("RGB").save(photos / name)
  result = _cli("--mode=evaluate", f"--workdir={workdir}", f"--input={photos}")
  assert result.returncode == 0, result.stderr
  printed = json.loads(result.stdout.strip().splitlines()[-1])
  assert printed["num_images"] == 3 and printed["step"] == 2  # all of them: no split
  assert printed["data"] == {"source": "input", "path": [str(photos)], "split": "all"}
  assert _read(os.path.join(workdir, "eval", "My_photos", "step_2.json")) == printed
  with open(own, "rb") as f:
    assert f.read() == before  # the run's own record is untouched
  step, metrics = sweep.last_eval(workdir)  # and it is what the sweep table shows
  assert step == 2 and metrics["num_images"] == 6


def test_evaluate_on_other_settings_of_the_runs_data_writes_beside_its_record(run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(run[1], workdir)
  before = _read(os.path.join(workdir, "eval", "step_2.json"))
  result = evaluator.evaluate_checkpoint(tiny_config(eval_batch_size=4, num_eval_images=3), workdir)
  assert result["num_images"] == 3 and result["data"] == {"source": "bundled", "split": "all"}
  assert _read(os.path.join(workdir, "eval", "bundled-3photos-32px", "step_2.json")) == result
  assert _read(os.path.join(workdir, "eval", "step_2.json")) == before


def test_input_that_names_no_photo_is_one_line(tmp_path):
  with pytest.raises(errors.DataError, match=r"--input=.*nothing\*\.png names no photo"):
    eval_data.input_images([str(tmp_path / "nothing*.png")])
  assert eval_data.name(eval_data.input_record(["a/b/photos/*.jpg", "x.png"])) == "photos_jpg+x_png"


def test_eval_fraction_1_points_to_evaluate_input():
  config = tiny_config(**{"data.source": "folder", "data.path": "x", "data.eval_fraction": 1.0})
  with pytest.raises(errors.ConfigError, match="--mode=evaluate --input=FOLDER") as e:
    configuration.validate(config)
  assert "\n" not in str(e.value)


def test_summary_of_a_run_and_its_key_errors_name_its_config(run):
  _, workdir, _ = run
  result = _cli("--mode=summary", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["image_size"] == 32 and summary["generator_params"] < 1_000_000  # the tiny run's
  result = _cli("--mode=evaluate", f"--workdir={workdir}", "--config.no_such_key=1")
  assert result.returncode == 2
  error = result.stderr.strip().splitlines()[-1]
  assert f"is not a key of the run's config ({workdir}/config.json)" in error, error
  assert "saved.py" not in result.stderr


def test_a_damaged_run_config_is_one_line_naming_it(tmp_path):
  (tmp_path / "config.json").write_text('{"batch_size": ')
  result = _cli("--mode=summary", f"--workdir={tmp_path}")
  assert result.returncode == 2
  error = result.stderr.strip().splitlines()[-1]
  assert error.startswith(f"colorgan: error: the run's config ({tmp_path}/config.json): ")
  assert "cannot be read as JSON" in error and "saved.py" not in result.stderr
