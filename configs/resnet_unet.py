"""The tutorial's "strategy 2" GAN stage: a ResNet-18 U-Net generator, 70x70 PatchGAN, vanilla GAN +
100 * L1, Adam 2e-4 (0.5, 0.999), 256 px, batch 16, 10,000 steps (the tutorial's 20 epochs of 8,000
photos).

The generator trains from scratch unless a run gives it a start:

  # 1. L1 pretraining of the generator alone (no discriminator), Adam 1e-4:
  python -m colorgan.main --config=configs/pretrain_l1.py --workdir=workdirs/pretrain
  # 2. The GAN, starting from that generator (fresh D and optimizers):
  python -m colorgan.main --config=configs/resnet_unet.py --workdir=workdirs/gan \
    --config.init_generator_from=workdirs/pretrain

Pretrained encoder weights (e.g. torchvision's ResNet-18 saved as .npz, see
colorgan/models/resnet_unet.py) go in --config.model.init_from=PATH.
"""

import os
import sys

# config_flags loads this file by path: make its sibling configs importable from any working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402


def get_config(arg: str | None = None):
  config = default.get_config(arg)  # "smoke" shrinks it as in default.py
  config.model.generator = "resnet_unet"
  config.model.resnet_depth = 18
  config.model.g_base_features = 64  # the ResNet's width: 64 is torchvision's
  if arg == "smoke":
    config.model.g_base_features = 8
  else:
    config.total_steps = 10_000
  return config
