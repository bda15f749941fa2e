"""Speed of the jitted joint train step and of generator inference, for side-by-side runs with
../shared/bench/torch_ref.py.

  python benchmarks/train_step.py --config=configs/default.py --size=64 --batch=16 --steps=5
  python benchmarks/train_step.py --config=configs/default.py --size=128 --batch=16 --steps=5 \
      --config.model.fast_layers=False       # the plain-Flax reference layers

Random images (uint8 RGB, as the input pipeline delivers them); float32 unless
--config.compute_dtype=bfloat16. Reports the compile times, the median/min/max seconds per call
after warm-up, XLA's FLOP count of each program (cost_analysis) and the FLOP rate achieved; the last
line is one JSON object (train_img_per_s, infer_img_per_s, infer1_img_per_s, train_compile_s, ...;
fast_layers is the resolved config.model.fast_layers: "auto" is True on CPU, False on GPU/TPU).
Inference is timed at --batch and at batch 1 (the colorize command's case).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import timing  # noqa: E402
from colorgan import models  # noqa: E402
from colorgan import parallel  # noqa: E402
from colorgan.training import step as step_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Training config.")
_SIZE = flags.DEFINE_integer("size", 64, "Image size (sets config.image_size).")
_BATCH = flags.DEFINE_integer("batch", 16, "Global batch size (sets config.batch_size).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed calls of each program.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls after compiling.")
_MODE = flags.DEFINE_enum("mode", "both", ["both", "train", "infer"], "What to time.")


def main(argv) -> None:
  del argv
  config = _CONFIG.value
  config.image_size, config.batch_size = _SIZE.value, _BATCH.value
  size, batch = config.image_size, config.batch_size
  mesh = parallel.create_mesh(config)
  generator, discriminator = models.create_generator(config), models.create_discriminator(config)
  fast_layers = models.use_fast_layers(config)
  print(
    f"jax {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} device(s); "
    f"size {size}, batch {batch}, {config.compute_dtype}, fast_layers={fast_layers} "
    f"(config: {config.model.fast_layers!r})",
    flush=True,
  )
  rng = np.random.default_rng(0)
  result = {
    "framework": "jax",
    "version": jax.__version__,
    "size": size,
    "batch": batch,
    "compute_dtype": config.compute_dtype,
    "fast_layers": fast_layers,
    "devices": jax.device_count(),
    "platform": jax.devices()[0].platform,
  }
  with jax.set_mesh(mesh):
    state = step_lib.init_train_state(config, generator, discriminator, mesh)
    result["g_params"] = sum(x.size for x in jax.tree.leaves(state.g_params))
    result["d_params"] = sum(x.size for x in jax.tree.leaves(state.d_params))

    if _MODE.value in ("both", "train"):
      images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
      figures, state = timing.time_train_step(
        config,
        generator,
        discriminator,
        mesh,
        state,
        images,
        steps=_STEPS.value,
        warmup=_WARMUP.value,
      )
      result.update(figures)

    if _MODE.value in ("both", "infer"):
      for name, infer_batch in (("infer", batch), ("infer1", 1)):
        l = jnp.asarray(rng.uniform(-1, 1, (infer_batch, size, size, 1)), jnp.float32)
        result.update(
          timing.time_generator(
            generator,
            state.g_params,
            state.g_batch_stats,
            l,
            name=name,
            warmup=_WARMUP.value,
            steps=_STEPS.value if infer_batch > 1 else 4 * _STEPS.value,
          )
        )
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
