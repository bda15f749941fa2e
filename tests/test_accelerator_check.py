"""benchmarks/accelerator_check.sh --quick runs every measurement and reports every figure.

The accelerator run itself (256 px, batch 16 and 64) needs a GPU or TPU; this keeps its code from
rotting: --quick is the same code at 64 px, batch 4, on the CPU (8 base filters, XLA's
optimizations off).
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN_KEYS = {
  "batch",
  "compute_dtype",
  "fast_layers",
  "img_per_s",
  "step_s",
  "step_min_s",
  "compile_s",
  "gflop_per_step",
  "model_gflop_per_step",
  "tflop_per_s",
  "mfu",
  "program_bytes",
  "peak_bytes_in_use",
  "error",
}
INFERENCE_KEYS = {
  "batch",
  "height",
  "width",
  "compute_dtype",
  "fast_layers",
  "img_per_s",
  "call_s",
  "compile_s",
  "gflop_per_call",
  "model_gflop_per_call",
  "tflop_per_s",
  "mfu",
  "program_bytes",
  "peak_bytes_in_use",
  "error",
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  out = tmp_path_factory.mktemp("accelerator_check")
  env = {
    **os.environ,
    "ACCEL_CHECK_DIR": str(out),
    "PYTHON": sys.executable,
    "JAX_COMPILATION_CACHE_DIR": "",
  }  # compile: the figures must be this run's
  result = subprocess.run(
    ["bash", "benchmarks/accelerator_check.sh", "--quick", "--pipeline_s=1"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  with open(out / "accelerator_check.json") as f:
    saved = json.load(f)
  return json.loads(result.stdout.strip().splitlines()[-1]), saved, result.stdout


def test_quick_check_reports_every_figure(quick):
  report, saved, stdout = quick
  assert report == saved  # the --output file holds the last line's object
  assert set(report) == {
    "quick",
    "budget_s",
    "image_size",
    "model",
    "environment",
    "train",
    "inference",
    "colorize",
    "pipeline",
    "summary",
    "elapsed_s",
    "interrupted",
  }
  assert report["quick"] and report["image_size"] == 64 and not report["interrupted"]
  assert report["model"] == {
    "generator": "unet",
    "g_base_features": 8,
    "discriminator": "patchgan",
    "d_base_features": 8,
    "d_layers": 3,
  }

  env = report["environment"]
  assert env["backend"] == "cpu" and env["device_kind"] == "cpu" and env["device_count"] >= 1
  assert env["fast_layers_auto"] is True  # "auto" on CPU: the matrix products
  assert env["peak_tflops"] == "unknown" and env["host_cpus"] == len(os.sched_getaffinity(0))
  assert {"jax", "jaxlib", "flax", "device_memory_bytes", "host_memory_bytes"} <= set(env)
  assert env["xla_optimizations"] is False  # --quick: compiling dominates on a CPU
  assert env["compilation_cache"] is None

  # Every train configuration: both dtypes, both layer paths, at batch 4.
  train = report["train"]
  assert {(e["batch"], e["compute_dtype"], e["fast_layers"]) for e in train} == {
    (4, dtype, fast) for dtype in ("float32", "bfloat16") for fast in (True, False)
  }
  for e in train:
    assert set(e) == TRAIN_KEYS and e["error"] is None, e
    assert e["img_per_s"] > 0 and e["compile_s"] > 0 and e["program_bytes"] > 0
    assert e["gflop_per_step"] > 0 and e["mfu"] == "unknown"  # no peak for a CPU
    assert e["img_per_s"] == pytest.approx(4 / e["step_s"], rel=1e-3)
    assert e["tflop_per_s"] == pytest.approx(
      e["model_gflop_per_step"] / e["step_s"] / 1e3, rel=1e-2
    )
  # The model's FLOPs are one count for every entry: the compiled flax float32 step's, give or take
  # what XLA:CPU fuses; the matrix products add the output-side formulation's border products.
  model = {e["model_gflop_per_step"] for e in train}
  assert len(model) == 1
  flops = {(e["compute_dtype"], e["fast_layers"]): e["gflop_per_step"] for e in train}
  assert flops["float32", False] == pytest.approx(model.pop(), rel=0.05)
  assert flops["float32", False] < flops["float32", True] < 2 * flops["float32", False]

  inference = report["inference"]
  assert {
    (e["batch"], e["height"], e["width"], e["compute_dtype"], e["fast_layers"]) for e in inference
  } == {
    (b, h, w, dtype, fast)
    for b, h, w in ((4, 64, 64), (1, 192, 256))
    for dtype in ("float32", "bfloat16")
    for fast in (True, False)
  }
  for e in inference:
    assert set(e) == INFERENCE_KEYS and e["error"] is None, e
    assert e["img_per_s"] > 0 and e["gflop_per_call"] > 0
  # 192x256 batch 1 is 12 64-px images' worth of pixels; batch 4 is 4.
  by_shape = {
    e["batch"]: e["gflop_per_call"]
    for e in inference
    if e["compute_dtype"] == "float32" and not e["fast_layers"]
  }
  assert by_shape[1] == pytest.approx(3 * by_shape[4], rel=0.15)
  for e in inference:
    assert e["model_gflop_per_call"] == pytest.approx(by_shape[e["batch"]], rel=0.05)

  colorize = report["colorize"]
  assert colorize["error"] is None, colorize
  assert (colorize["photo_height"], colorize["photo_width"], colorize["model_size"]) == (
    192,
    256,
    64,
  )
  assert colorize["fast_layers"] is True and colorize["seconds_per_photo"] > 0

  pipeline = report["pipeline"]
  assert pipeline["error"] is None, pipeline
  assert pipeline["images_per_s"] > 0 and pipeline["image_size"] == 64
  assert pipeline["source"] == "bundled" and pipeline["cpus"] == env["host_cpus"]
  demand = max(e["img_per_s"] for e in train)
  assert pipeline["step_demand_img_per_s"] == demand
  assert pipeline["feed_ratio"] == pytest.approx(pipeline["images_per_s"] / demand, abs=0.01)

  summary = report["summary"]
  assert summary["best_train_img_per_s"] == demand and summary["errors"] == 0
  assert summary["best_bf16_mfu"] is None  # unknown peak
  assert "--- train step: 64 px, batch 4, bfloat16" in stdout


def test_peak_table_and_mfu():
  program = "\n".join(
    [
      "from benchmarks import accelerator_check as a",
      "kinds = ['NVIDIA H100 80GB HBM3', 'NVIDIA H100 PCIe', 'NVIDIA H200', 'NVIDIA A100-SXM4-40GB',",
      "         'NVIDIA L4', 'NVIDIA L40S', 'Tesla V100-SXM2-16GB', 'TPU v4', 'TPU v4 lite',",
      "         'TPU v5 lite', 'TPU v5', 'TPU v6 lite', 'cpu']",
      "print({k: (p or {}).get('name') for k, p in ((k, a.peak_tflops(k)) for k in kinds)})",
      "h100 = a.peak_tflops('NVIDIA H100 80GB HBM3')",
      "v100 = a.peak_tflops('Tesla V100-SXM2-16GB')",
      "print(a.mfu(494.5e12, 1.0, h100, 'bfloat16'), a.mfu(1e12, 2.0, h100, 'float32'),",
      "      a.mfu(1e12, 1.0, None, 'float32'), a.mfu(1e12, 1.0, v100, 'bfloat16'))",
    ]
  )
  result = subprocess.run(
    [sys.executable, "-c", program],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  names, mfus = result.stdout.strip().splitlines()[-2:]
  assert eval(names) == {  # pylint: disable=eval-used  (our own program's dict)
    "NVIDIA H100 80GB HBM3": "H100 SXM",
    "NVIDIA H100 PCIe": "H100 PCIe",
    "NVIDIA H200": "H200",
    "NVIDIA A100-SXM4-40GB": "A100",
    "NVIDIA L4": "L4",
    "NVIDIA L40S": None,
    "Tesla V100-SXM2-16GB": "V100 SXM2",
    "TPU v4": "TPU v4",
    "TPU v4 lite": None,
    "TPU v5 lite": "TPU v5e",
    "TPU v5": "TPU v5p",
    "TPU v6 lite": "TPU v6e",
    "cpu": None,
  }
  # 494.5 of H100's 989 bf16 TFLOP/s; 0.5 of its 495 TF32; no peak; V100 has no bf16 peak.
  assert mfus == "0.5 0.001 unknown unknown"
