"""One-shot accelerator check: what colorgan's default recipe does on this machine's first device.

  bash benchmarks/accelerator_check.sh                    # one GPU or TPU chip: < 8 minutes
  bash benchmarks/accelerator_check.sh --quick            # the same code, 64 px, batch 4, on a CPU
  python benchmarks/accelerator_check.py --output=/tmp/check.json --budget_s=300

Measures, in this order (the most telling first, in case the time budget runs out):
  environment   jax/jaxlib/flax versions, backend, device kind and count, device and host memory,
                host cores, the device's peak FLOP/s from PEAK_TFLOPS (or "unknown");
  train         the jitted joint G+D train step at 256 px, batch 16 and 64, float32 and bfloat16,
                with config.model.fast_layers off (flax's convolutions) and on (matrix products):
                img/s, step and compile seconds, XLA's FLOPs per step (cost_analysis of the compiled
                step) and the model's (of the flax-layer step as traced: the same on every
                backend), MFU (the model's FLOP/s over the peak), the program's device memory
                (memory_analysis) and the device's peak memory so far (memory_stats; a high-water
                mark of the whole process);
  inference     the generator (inference mode) at 256 px batch 64 and at 768x1024 batch 1, in both
                dtypes and both layer paths. The U-Net is fully convolutional: any H and W divisible
                by 2**depth run through it (depth 8 at 256 px: 768 and 1024 are 3 and 4 x 256);
  colorize      --mode=colorize's path for a 1024x768 photo (JPEG files decoded, L resized to the
                generator's 256 px with the aspect kept, ab upsampled to full size, written back):
                seconds per photo at batch 1, float32, the backend's default layers;
  pipeline      the input pipeline (the config's data source, bundled photos by default; nothing
                is downloaded) at 256 px with every host core (tf.data AUTOTUNE), and its ratio to
                the fastest train step's demand (feed_ratio > 1: the pipeline keeps up).
Each measurement runs in its own try/except (a failure is an error string in its entry, the rest go
on); none starts after --budget_s (its entry says "skipped"), and after each one the JSON so far is
written to --output (atomically), so an interrupted run keeps what it measured. The last line
printed is the JSON object with every figure.

--quick: the same code at 64 px, batch 4 (and 192x256 inference, a 256x192 photo), 2 timed steps,
8 base filters in G and D and XLA's optimizations off (compiling dominates on a CPU: the full
widths take 2-4 minutes there): under a minute on a CPU. Its figures show that the code runs, not
how fast anything is.
"""

import copy
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from colorgan import configuration  # noqa: E402
from colorgan import errors  # noqa: E402
from colorgan import fileio  # noqa: E402
from colorgan import models  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  "configs/default.py",
  "Training config: the recipe measured (image_size and batch_size are set by the check).",
)
_QUICK = flags.DEFINE_bool(
  "quick",
  False,
  "64 px, batch 4, 2 timed steps, 8 base filters, XLA's "
  "optimizations off: under a minute on a CPU.",
)
_BUDGET = flags.DEFINE_float("budget_s", 390.0, "No measurement starts after this many seconds.")
_OUTPUT = flags.DEFINE_string("output", "", "Also write the JSON here, after every measurement.")
_STEPS = flags.DEFINE_integer("steps", 0, "Timed calls per measurement; 0: 10 (--quick: 2).")
_PIPELINE_S = flags.DEFINE_float(
  "pipeline_s", 0.0, "Seconds the input pipeline is timed; 0: 20 (--quick: 3)."
)

# Dense peak TFLOP/s per JAX device, from the vendors' data sheets (no sparsity): (device_kind
# pattern, name, bfloat16, float32). float32 is the peak of float32 inputs at JAX's default matmul
# precision: TF32 tensor cores on NVIDIA Ampere and later, one bfloat16 pass on TPU, plain FP32
# on V100 (which has no bfloat16 tensor cores: None, unknown). One JAX device is one TPU chip from
# v4 on (megacore).
PEAK_TFLOPS = (
  (r"nvidia h100 pcie", "H100 PCIe", 756.0, 378.0),
  (r"nvidia h100 nvl", "H100 NVL", 835.0, 418.0),
  (r"nvidia h100\b.*", "H100 SXM", 989.0, 495.0),
  (r"nvidia (gh|h)200\b.*", "H200", 989.0, 495.0),
  (r"nvidia a100\b.*", "A100", 312.0, 156.0),
  (r"nvidia l4", "L4", 121.0, 60.0),
  (r"tesla v100-sxm2.*", "V100 SXM2", None, 15.7),
  (r"tesla v100-pcie.*", "V100 PCIe", None, 14.0),
  (r"tpu v4", "TPU v4", 275.0, 275.0),
  (r"tpu v5 lite|tpu v5e", "TPU v5e", 197.0, 197.0),
  (r"tpu v5p?", "TPU v5p", 459.0, 459.0),
  (r"tpu v6 lite|tpu v6e", "TPU v6e", 918.0, 918.0),
)

# gflop_per_*: XLA's count of the compiled program (cost_analysis of what runs: the fast layers' extra
# border products included; a backend's library calls may be left out). model_gflop_per_*: the model's
# FLOPs, XLA's count of the flax path as traced (the same on every backend and for both dtypes);
# tflop_per_s and mfu use these.
TRAIN_KEYS = (
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
)
INFERENCE_KEYS = (
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
)
COLORIZE_KEYS = (
  "photo_height",
  "photo_width",
  "model_size",
  "photos",
  "compute_dtype",
  "fast_layers",
  "seconds_per_photo",
  "photos_per_s",
  "first_run_s",
  "error",
)
PIPELINE_KEYS = (
  "images_per_s",
  "batch_size",
  "image_size",
  "steps",
  "seconds",
  "source",
  "train_images",
  "cpus",
  "start_s",
  "cpu_seconds",
  "images_per_cpu_s",
  "load_avg_1min",
  "step_demand_img_per_s",
  "feed_ratio",
  "error",
)


def peak_tflops(device_kind: str) -> dict | None:
  """{"name", "bfloat16", "float32"} for a device_kind of PEAK_TFLOPS, or None."""
  for pattern, name, bf16, fp32 in PEAK_TFLOPS:
    if re.fullmatch(pattern, device_kind.strip().lower()):
      return {"name": name, "bfloat16": bf16, "float32": fp32}
  return None


def mfu(flop: float, seconds: float, peak: dict | None, dtype: str) -> float | str:
  """Achieved FLOP/s over the device's peak for `dtype`; "unknown" without a peak or a count."""
  if not peak or not peak.get(dtype) or not flop:
    return "unknown"
  return round(flop / seconds / (peak[dtype] * 1e12), 4)


def _memory_stats(device) -> dict:
  try:
    return device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    return {}


def _error(e: BaseException) -> str:
  return f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]


class Check:
  """The measurements, each recorded into `self.result` whatever happens to the others."""

  def __init__(
    self, config, *, quick: bool, budget_s: float, output: str, steps: int, pipeline_s: float
  ):
    self.config = copy.deepcopy(config)
    if quick:
      self.config.model.g_base_features = self.config.model.d_base_features = 8
    self.quick = quick
    self.size = 64 if quick else 256
    self.batches = (4,) if quick else (16, 64)
    self.infer_shapes = ((4, 64, 64), (1, 192, 256)) if quick else ((64, 256, 256), (1, 768, 1024))
    self.photo = (192, 256) if quick else (768, 1024)
    self.steps = steps or (2 if quick else 10)
    self.warmup = 1 if quick else 2
    self.pipeline_s = pipeline_s or (3.0 if quick else 20.0)
    self.output = output
    self.start = time.perf_counter()
    self.deadline = self.start + budget_s
    self.device = jax.local_devices()[0]
    self.peak = None
    self.state = None  # the train state, carried from step to step (the step donates it)
    self.model_flops = {}  # (what, shape) -> the model's FLOPs per call
    self.mesh = None
    model = self.config.model
    self.result = {
      "quick": quick,
      "budget_s": budget_s,
      "image_size": self.size,
      "model": {
        "generator": model.generator,
        "g_base_features": model.g_base_features,
        "discriminator": model.discriminator,
        "d_base_features": model.d_base_features,
        "d_layers": model.d_layers,
      },
      "environment": {},
      "train": [],
      "inference": [],
      "colorize": {},
      "pipeline": {},
      "summary": {},
      "elapsed_s": 0.0,
      "interrupted": False,
    }

  # --------------------------------------------------------------------------- bookkeeping
  def _config(self, **values):
    config = copy.deepcopy(self.config)  # keeps model.fast_layers' FieldReference (any type)
    config.image_size = self.size
    for key, value in values.items():
      target = config
      *parents, leaf = key.split(".")
      for part in parents:
        target = target[part]
      target[leaf] = value
    return config

  def _save(self) -> None:
    self.result["elapsed_s"] = round(time.perf_counter() - self.start, 1)
    if self.output:
      fileio.write_text(self.output, json.dumps(self.result, indent=1) + "\n")

  def _measure(self, entry: dict, what: str, measure) -> dict:
    """Runs measure() -> figures into `entry` (its error: None, or why there are no figures)."""
    if time.perf_counter() > self.deadline:
      entry["error"] = f"skipped: past the time budget (--budget_s={self.result['budget_s']:g})"
      print(f"{what}: skipped (time budget)", flush=True)
    else:
      print(f"--- {what}", flush=True)
      entry["error"] = "interrupted"  # until it returns
      try:
        entry.update(measure())
        entry["error"] = None
      except Exception as e:  # pylint: disable=broad-except  (one failure must not lose the rest)
        entry["error"] = _error(e)
        print(f"{what}: failed: {entry['error']}", flush=True)
        traceback.print_exc(limit=3)
    self._save()
    return entry

  def _peak_bytes(self) -> int | None:
    return _memory_stats(self.device).get("peak_bytes_in_use")

  # --------------------------------------------------------------------------- measurements
  def environment(self) -> None:
    import flax  # pylint: disable=g-import-not-at-top
    import jaxlib  # pylint: disable=g-import-not-at-top

    stats = _memory_stats(self.device)
    self.peak = peak_tflops(self.device.device_kind)
    self.result["environment"] = {
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "python": platform.python_version(),
      "backend": jax.default_backend(),
      "device_kind": self.device.device_kind,
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
      "process_count": jax.process_count(),
      "device_memory_bytes": stats.get("bytes_limit"),
      "host_cpus": len(os.sched_getaffinity(0)),
      "host_memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
      "peak_tflops": self.peak or "unknown",
      "fast_layers_auto": models.use_fast_layers(self._config(**{"model.fast_layers": "auto"})),
      "compilation_cache": jax.config.jax_compilation_cache_dir or None,
      "xla_optimizations": not jax.config.read("jax_disable_most_optimizations"),
      "measured_on": "the first local device",
    }
    print(json.dumps(self.result["environment"]), flush=True)
    self._save()

  def _mesh(self):
    from colorgan import parallel  # pylint: disable=g-import-not-at-top

    if self.mesh is None:
      self.mesh = parallel.create_mesh(self.config, devices=[self.device])
    return self.mesh

  def _state(self, config):
    from colorgan.training import step as step_lib  # pylint: disable=g-import-not-at-top

    if self.state is None:
      mesh = self._mesh()
      with jax.set_mesh(mesh):
        self.state = step_lib.init_train_state(
          config, models.create_generator(config), models.create_discriminator(config), mesh
        )
    return self.state

  def _model_config(self, **values):
    """The model as defined: flax's layers, float32 (the FLOPs are the same in bfloat16)."""
    return self._config(compute_dtype="float32", **{"model.fast_layers": False}, **values)

  def train_step(self, batch: int, dtype: str, fast: bool) -> None:
    entry = dict.fromkeys(TRAIN_KEYS)
    entry.update(batch=batch, compute_dtype=dtype, fast_layers=fast)

    def measure():
      from benchmarks import timing  # pylint: disable=g-import-not-at-top
      from colorgan import parallel  # pylint: disable=g-import-not-at-top
      from colorgan.training import step as step_lib  # pylint: disable=g-import-not-at-top

      config = self._config(batch_size=batch, compute_dtype=dtype, **{"model.fast_layers": fast})
      mesh = self._mesh()
      images = np.random.default_rng(batch).integers(
        0, 256, (batch, self.size, self.size, 3), dtype=np.uint8
      )
      with jax.set_mesh(mesh):
        state = self._state(config)
        if ("train", batch) not in self.model_flops:
          model = self._model_config(batch_size=batch)
          step = step_lib.make_train_step(
            model, models.create_generator(model), models.create_discriminator(model), mesh
          )
          self.model_flops["train", batch] = timing.traced_flops(
            step, state, {"image": jax.device_put(images, parallel.batch_sharding(mesh))}
          )
        self.state = None  # donated below; the returned state replaces it (a failure: a new one)
        figures, self.state = timing.time_train_step(
          config,
          models.create_generator(config),
          models.create_discriminator(config),
          mesh,
          state,
          images,
          steps=self.steps,
          warmup=self.warmup,
        )
      flop = self.model_flops["train", batch]
      return {
        "img_per_s": round(figures["train_img_per_s"], 2),
        "step_s": round(figures["train_s"], 5),
        "step_min_s": round(figures["train_min_s"], 5),
        "compile_s": round(figures["train_compile_s"], 2),
        "gflop_per_step": float(f"{figures['train_gflop']:.4g}"),
        "model_gflop_per_step": float(f"{flop / 1e9:.4g}"),
        "tflop_per_s": float(f"{flop / figures['train_s'] / 1e12:.4g}"),
        "mfu": mfu(flop, figures["train_s"], self.peak, dtype),
        "program_bytes": figures["train_program_bytes"],
        "peak_bytes_in_use": self._peak_bytes(),
      }

    layers = "matrix-product layers" if fast else "flax convolutions"
    self.result["train"].append(entry)
    self._measure(entry, f"train step: {self.size} px, batch {batch}, {dtype}, {layers}", measure)
    if entry["error"] is None:
      print(f"train: {entry['img_per_s']} img/s, MFU {entry['mfu']}", flush=True)

  def inference(self, shape: tuple[int, int, int], dtype: str, fast: bool) -> None:
    batch, height, width = shape
    entry = dict.fromkeys(INFERENCE_KEYS)
    entry.update(batch=batch, height=height, width=width, compute_dtype=dtype, fast_layers=fast)

    def measure():
      from benchmarks import timing  # pylint: disable=g-import-not-at-top

      config = self._config(compute_dtype=dtype, **{"model.fast_layers": fast})
      state = self._state(config)
      l = jax.device_put(
        np.random.default_rng(0).uniform(-1, 1, (batch, height, width, 1)).astype(np.float32),
        self.device,
      )
      with jax.set_mesh(self._mesh()):
        if ("infer", shape) not in self.model_flops:
          model = models.create_generator(self._model_config())
          self.model_flops["infer", shape] = timing.traced_flops(
            jax.jit(lambda p, s, l: models.predict_ab(model, {"params": p, "batch_stats": s}, l)),
            state.g_params,
            state.g_batch_stats,
            l,
          )
        figures = timing.time_generator(
          models.create_generator(config),
          state.g_params,
          state.g_batch_stats,
          l,
          steps=self.steps * (2 if batch == 1 else 1),
          warmup=self.warmup,
        )
      flop = self.model_flops["infer", shape]
      return {
        "img_per_s": round(figures["infer_img_per_s"], 2),
        "call_s": round(figures["infer_s"], 5),
        "compile_s": round(figures["infer_compile_s"], 2),
        "gflop_per_call": float(f"{figures['infer_gflop']:.4g}"),
        "model_gflop_per_call": float(f"{flop / 1e9:.4g}"),
        "tflop_per_s": float(f"{flop / figures['infer_s'] / 1e12:.4g}"),
        "mfu": mfu(flop, figures["infer_s"], self.peak, dtype),
        "program_bytes": figures["infer_program_bytes"],
        "peak_bytes_in_use": self._peak_bytes(),
      }

    layers = "matrix-product layers" if fast else "flax convolutions"
    self.result["inference"].append(entry)
    self._measure(
      entry, f"generator inference: batch {batch}, {height}x{width}, {dtype}, {layers}", measure
    )

  def colorize(self) -> None:
    height, width = self.photo
    photos = 2 if self.quick else 8
    entry = dict.fromkeys(COLORIZE_KEYS)
    entry.update(
      photo_height=height,
      photo_width=width,
      model_size=self.size,
      photos=photos,
      compute_dtype="float32",
    )

    def measure():
      from PIL import Image  # pylint: disable=g-import-not-at-top
      from colorgan.inference import colorize  # pylint: disable=g-import-not-at-top
      from colorgan.inference import photo  # pylint: disable=g-import-not-at-top

      config = self._config(compute_dtype="float32", **{"model.fast_layers": "auto"})
      entry["fast_layers"] = models.use_fast_layers(config)
      state = self._state(config)
      # A smooth photo with some texture: JPEG-decodes like a photograph, not like noise.
      y, x = np.mgrid[0:height, 0:width]
      texture = np.random.default_rng(0).integers(0, 24, (height, width, 1))
      rgb = (
        np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=-1)
        + texture
      )
      with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "in")
        os.makedirs(inputs)
        for i in range(photos):
          Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(
            os.path.join(inputs, f"photo{i}.jpg"), quality=90
          )
        colorizer = colorize.Colorizer(
          config,
          {"params": state.g_params, "batch_stats": state.g_batch_stats},
          step=0,
          size=self.size,
          batch_size=1,
          mesh=self._mesh(),
        )
        start = time.perf_counter()  # the first photo compiles the generator
        first = photo.plan([os.path.join(inputs, "photo0.jpg")], os.path.join(tmp, "out0"), "jpg")
        if colorizer.run(first):
          raise RuntimeError("colorizing the first photo failed (see above)")
        first_run_s = time.perf_counter() - start
        start = time.perf_counter()
        if colorizer.run(photo.plan([inputs], os.path.join(tmp, "out"), "jpg")):
          raise RuntimeError("colorizing the photos failed (see above)")
        seconds = time.perf_counter() - start
      return {
        "seconds_per_photo": round(seconds / photos, 4),
        "photos_per_s": round(photos / seconds, 2),
        "first_run_s": round(first_run_s, 2),
      }

    self.result["colorize"] = entry
    self._measure(
      entry, f"colorize: {photos} photos of {width}x{height} at {self.size} px", measure
    )

  def pipeline(self) -> None:
    entry = dict.fromkeys(PIPELINE_KEYS)

    def measure():
      from benchmarks import timing  # pylint: disable=g-import-not-at-top

      config = self._config(batch_size=max(self.batches), **{"data.num_parallel_calls": -1})
      figures, _ = timing.time_input_pipeline(
        config, steps=1_000_000, warmup=3, max_seconds=self.pipeline_s
      )
      done = [e for e in self.result["train"] if e["error"] is None]
      demand = max((e["img_per_s"] for e in done), default=None)
      figures["step_demand_img_per_s"] = demand
      figures["feed_ratio"] = round(figures["images_per_s"] / demand, 2) if demand else None
      return figures

    self.result["pipeline"] = entry
    self._measure(entry, f"input pipeline: {self.size} px, every host core", measure)

  def summarize(self) -> None:
    """The figures the issue's goals are about: the best train step, bf16 MFU, the feed ratio."""
    done = [e for e in self.result["train"] if e["error"] is None]
    best = max(done, key=lambda e: e["img_per_s"], default=None)
    bf16 = [e for e in done if e["compute_dtype"] == "bfloat16" and isinstance(e["mfu"], float)]
    best_bf16 = max(bf16, key=lambda e: e["mfu"], default=None)
    self.result["summary"] = {
      "best_train_img_per_s": best and best["img_per_s"],
      "best_train": best and {k: best[k] for k in ("batch", "compute_dtype", "fast_layers")},
      "best_bf16_mfu": best_bf16 and best_bf16["mfu"],
      "best_bf16_mfu_batch": best_bf16 and best_bf16["batch"],
      "feed_ratio": self.result["pipeline"].get("feed_ratio"),
      "errors": sum(
        e.get("error") is not None
        for e in self.result["train"]
        + self.result["inference"]
        + [self.result["colorize"], self.result["pipeline"]]
        if e
      ),
    }
    self._save()

  def run(self) -> None:
    self.environment()
    try:  # TensorFlow only feeds data: a GPU build would otherwise take the accelerator's memory
      import tensorflow as tf  # pylint: disable=g-import-not-at-top

      tf.config.set_visible_devices([], "GPU")
    except Exception:  # pylint: disable=broad-except  (absent: the pipeline's entry will say so)
      pass
    # The backend's own layers first (flax's convolutions on GPU/TPU), then the others: if the
    # budget runs out, what is left unmeasured is the path "auto" does not take there.
    auto = self.result["environment"]["fast_layers_auto"]
    for fast in (auto, not auto):
      for dtype in ("bfloat16", "float32"):
        for batch in self.batches:
          self.train_step(batch, dtype, fast)
      for dtype in ("bfloat16", "float32"):
        for shape in self.infer_shapes:
          self.inference(shape, dtype, fast)
      if fast == auto:
        self.colorize()
        self.pipeline()


def main(argv) -> None:
  if len(argv) > 1:
    print(f"accelerator_check: error: unexpected argument(s) {' '.join(argv[1:])}", file=sys.stderr)
    sys.exit(2)
  if _QUICK.value:  # before the backend starts: XLA:CPU's classic emitters compile ~3x faster
    os.environ["XLA_FLAGS"] = " ".join(
      filter(None, [os.environ.get("XLA_FLAGS"), "--xla_cpu_use_fusion_emitters=false"])
    )
  config = _CONFIG.value
  try:
    configuration.validate(config)
  except errors.ConfigError as e:
    print(f"accelerator_check: error: {e}", file=sys.stderr)
    sys.exit(2)
  if jax.default_backend() == "cpu" and not _QUICK.value:
    print(
      "accelerator_check: error: JAX sees no accelerator (backend cpu): install jax's plugin "
      "for it (e.g. pip install 'jax[cuda12]'), or pass --quick for the CPU check",
      file=sys.stderr,
    )
    sys.exit(2)
  if _QUICK.value:
    jax.config.update("jax_disable_most_optimizations", True)
  check = Check(
    config,
    quick=_QUICK.value,
    budget_s=_BUDGET.value,
    output=_OUTPUT.value,
    steps=_STEPS.value,
    pipeline_s=_PIPELINE_S.value,
  )
  try:
    check.run()
  except KeyboardInterrupt:  # the .sh's timeout: keep what was measured
    check.result["interrupted"] = True
    print("accelerator_check: interrupted; the figures so far follow", flush=True)
  check.summarize()
  print(json.dumps(check.result), flush=True)


if __name__ == "__main__":
  app.run(main)
