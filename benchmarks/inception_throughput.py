"""Inception feature throughput (images/s at 299 px): colorgan's Flax network beside pytorch-fid's.

  python benchmarks/inception_throughput.py --batch=50 --rounds=3
  python benchmarks/inception_throughput.py --folder=../shared/data/bsds500/val --batch=50

The same photos (the bundled ones, or the first --batch of --folder, repeated to fill the batch),
preprocessed once as pytorch-fid does (RGB in [0, 1], resized to 299x299), go
through colorgan.evaluation.inception's jitted network and through pytorch-fid's InceptionV3([3])
(torch.no_grad, all CPU threads) in alternating rounds in the same process, so both see the same
machine load; each
round times --steps calls after a warm-up call. Both networks carry the same random weights (a
pytorch-fid .pth built with PyTorch and converted; the speed does not depend on the values), or
--pth's. Needs the test extras (torch, torchvision, pytorch-fid). The last line is one JSON object:
{"batch", "colorgan_img_per_s", "pytorch_fid_img_per_s", "ratio", "compile_s", ...} (medians).
"""

import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from colorgan import convert_weights  # noqa: E402
from colorgan.evaluation import inception  # noqa: E402
from colorgan.data import sources  # noqa: E402
from tests import torch_reference  # noqa: E402

_FOLDER = flags.DEFINE_string("folder", None, "Photos to use (default: the bundled photos).")
_PTH = flags.DEFINE_string("pth", None, "pytorch-fid weights (default: random ones).")
_BATCH = flags.DEFINE_integer("batch", 50, "Images per call (pytorch-fid's default batch: 50).")
_STEPS = flags.DEFINE_integer("steps", 2, "Timed calls per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds (colorgan, then pytorch-fid).")


def _photos(batch: int) -> np.ndarray:
  """float32 [batch, 299, 299, 3] in [0, 1]: the photos resized as pytorch-fid resizes them."""
  if _FOLDER.value:
    paths = [os.path.join(_FOLDER.value, p) for p in sources.list_image_files(_FOLDER.value)][
      :batch
    ]
  else:
    paths = list(sources.bundled_photo_paths())
  images = [
    inception.resize_bilinear(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255)
    for p in paths
  ]
  return np.stack([images[i % len(images)] for i in range(batch)])


def _time(call, steps: int) -> float:
  """Median seconds per call of `steps` calls (after one untimed call)."""
  call()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(os.cpu_count())
  x01 = _photos(_BATCH.value)
  with tempfile.TemporaryDirectory() as tmp:
    pth = _PTH.value or os.path.join(tmp, "random.pth")
    if not _PTH.value:
      torch_reference.save_random_fid_inception(pth)
    npz = os.path.join(tmp, "inception.npz")
    convert_weights.convert_inception(pth, npz)
    variables = jax.device_put(inception.load_variables(npz))
    reference = torch_reference.pytorch_fid_model(pth)

  x = jax.device_put(2 * x01 - 1)  # what pytorch-fid's model computes from x01 before its blocks
  start = time.perf_counter()
  features = jax.jit(inception.features).lower(variables, x).compile()
  compile_s = time.perf_counter() - start
  x_torch = torch.as_tensor(x01.transpose(0, 3, 1, 2).copy())

  def ours():
    features(variables, x).block_until_ready()

  def theirs():
    with torch.no_grad():
      reference(x_torch)

  rates = {"colorgan": [], "pytorch_fid": []}
  for r in range(_ROUNDS.value):
    for name, call in (("colorgan", ours), ("pytorch_fid", theirs)):
      rates[name].append(_BATCH.value / _time(call, _STEPS.value))
    print(
      f"round {r + 1}: colorgan {rates['colorgan'][-1]:.2f} img/s, pytorch-fid "
      f"{rates['pytorch_fid'][-1]:.2f} img/s",
      flush=True,
    )
  ours_rate, theirs_rate = (statistics.median(rates[k]) for k in ("colorgan", "pytorch_fid"))
  print(
    json.dumps(
      {
        "batch": _BATCH.value,
        "image_size": inception.INPUT_SIZE,
        "colorgan_img_per_s": round(ours_rate, 3),
        "pytorch_fid_img_per_s": round(theirs_rate, 3),
        "ratio": round(ours_rate / theirs_rate, 3),
        "compile_s": round(compile_s, 2),
        "rounds": rates,
        "jax_backend": jax.default_backend(),
        "torch_threads": torch.get_num_threads(),
      }
    )
  )


if __name__ == "__main__":
  app.run(main)
