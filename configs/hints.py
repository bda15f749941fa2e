"""Color hints (Zhang et al. 2017) in the GAN: a recipe whose generator also takes the colors a
person gives at a few points (README "Color hints"). The argument picks the recipe it adds them to:

  python -m colorgan.main --config=configs/hints.py --workdir=workdirs/hints           # default.py
  python -m colorgan.main --config=configs/hints.py:quickstart --workdir=workdirs/hq  # 64 px
  python -m colorgan.main --config=configs/hints.py:resnet_unet --workdir=workdirs/hr
  python -m colorgan.main --mode=colorize --workdir=workdirs/hq --input=photo.jpg \
    --hints=photo.json --output_dir=colorized

Training draws Zhang et al.'s hints from each photo (config.hints.*: a geometric number of points,
none on one photo in eight, centered locations, 1-9 px patches of the photo's mean color);
evaluation also scores the model with 0 to 50 ground-truth points (config.eval.hint_counts).
"""

import os
import sys

# config_flags loads this file by path: make its sibling configs importable from any working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402
from configs import quickstart  # noqa: E402
from configs import resnet_unet  # noqa: E402

BASES = {
  "default": default.get_config,
  "quickstart": quickstart.get_config,
  "resnet_unet": resnet_unet.get_config,
  "smoke": lambda: default.get_config("smoke"),
}


def quick_hints(config):
  """The quickstart made to follow hints within its minutes on the eight bundled photos.

  With configs/quickstart.py as it is, the generator learns the eight photos' colors by heart and
  ignores hints (10 points: +0.09 dB on unseen photos). Here it cannot lean on memory as much, and
  hints pay from the first steps (README "Color hints" has the figures):
  - an L1 regression without the GAN (Zhang et al. 2017 trained with a regression loss too) at a
    5x learning rate: about twice the steps per second, and no discriminator to satisfy first;
  - 64-px crops of photos at a 128-px short side, not 80: a crop shows a quarter of the photo, far
    more crops to learn by heart;
  - more and larger hints: about 30 points of 3-9 px on 15 photos of 16 (the paper's 8 of 1-9 px on
    7 of 8, at 256 px).
  """
  config.loss.gan = "none"
  config.optim.g_learning_rate = 1e-3
  config.data.load_size = 128
  config.hints.p = 1 / 32
  config.hints.no_hint_share = 1 / 16
  config.hints.min_patch_size = 3
  return config


def get_config(arg: str | None = None):
  base = arg or "default"
  if base not in BASES:
    raise ValueError(
      f"configs/hints.py takes one of {', '.join(BASES)} (the recipe it adds hints to), got {arg!r}"
    )
  config = BASES[base]()
  config.hints.enabled = True
  config.eval.hint_counts = (0, 1, 2, 5, 10, 20, 50)
  if base == "quickstart":
    quick_hints(config)
  return config
