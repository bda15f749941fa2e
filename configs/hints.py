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


def get_config(arg: str | None = None):
  base = arg or "default"
  if base not in BASES:
    raise ValueError(f"configs/hints.py takes one of {', '.join(BASES)} (the recipe it adds hints "
                     f"to), got {arg!r}")
  config = BASES[base]()
  config.hints.enabled = True
  config.eval.hint_counts = (0, 1, 2, 5, 10, 20, 50)
  return config
