"""Stage 1 of the two-stage recipe: the generator alone, trained with the reconstruction loss only.

No discriminator step (config.loss.gan = "none"), plain L1 (weight 1), Adam 1e-4 with PyTorch's
default betas (0.9, 0.999): the tutorial's pretraining of its ResNet U-Net. The argument picks the
config whose generator is pretrained, so that stage 2 can start from it:

  python -m colorgan.main --config=configs/pretrain_l1.py --workdir=workdirs/pretrain  # resnet_unet
  python -m colorgan.main --config=configs/resnet_unet.py --workdir=workdirs/gan \
    --config.init_generator_from=workdirs/pretrain

  # the same with the quickstart's U-Net:
  python -m colorgan.main --config=configs/pretrain_l1.py:quickstart --workdir=workdirs/pre_qs
  python -m colorgan.main --config=configs/quickstart.py --workdir=workdirs/gan_qs \
    --config.init_generator_from=workdirs/pre_qs
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402
from configs import quickstart  # noqa: E402
from configs import resnet_unet  # noqa: E402

BASES = {
  "resnet_unet": resnet_unet.get_config,
  "default": default.get_config,
  "quickstart": quickstart.get_config,
  "smoke": lambda: resnet_unet.get_config("smoke"),
}


def get_config(arg: str | None = None):
  base = arg or "resnet_unet"
  if base not in BASES:
    raise ValueError(
      f"configs/pretrain_l1.py takes one of {', '.join(BASES)} (the config whose "
      f"generator it pretrains), got {arg!r}"
    )
  config = BASES[base]()
  config.loss.gan = "none"  # no discriminator step
  config.loss.l1_weight = 1.0  # the tutorial's nn.L1Loss()
  config.optim.g_learning_rate = 1e-4
  config.optim.b1 = 0.9  # torch.optim.Adam's defaults, as the tutorial's pretraining uses
  config.optim.b2 = 0.999
  return config
