"""The pix2pix / "Image Colorization with U-Net and GAN" recipe at 256 px.

U-Net-256 generator (54,409,858 params), 70x70 PatchGAN (2,765,633 params), vanilla GAN + 100 * L1,
Adam(2e-4, betas (0.5, 0.999)) for both networks, batch 16.

  python -m colorgan.main --config=configs/default.py --workdir=/tmp/colorgan
  python -m colorgan.main --config=configs/default.py:smoke --workdir=/tmp/smoke   # a laptop-sized run
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.image_size = 256
  config.batch_size = 16  # global, over all devices and hosts
  config.total_steps = 50_000  # the tutorial's 100 epochs of 8,000 COCO photos at batch 16
  config.compute_dtype = "float32"  # or "bfloat16" for activations; params stay float32

  config.log_every_steps = 100
  config.sample_every_steps = 1_000
  config.checkpoint_every_steps = 5_000
  config.keep_checkpoints = 3
  config.num_samples = 8  # photos in the sample grid (taken from the eval split)

  # Devices along each axis of the ("data", "model") mesh; -1: all devices the other axis leaves.
  # Batches are split over "data" (batch_size must divide by its size) and the state is replicated;
  # "model" holds room for parameter sharding (today a size > 1 only repeats the computation).
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.model = 1

  config.model = ml_collections.ConfigDict()
  config.model.generator = "unet"          # colorgan.models.GENERATORS
  config.model.discriminator = "patchgan"  # colorgan.models.DISCRIMINATORS
  config.model.num_downs = 0               # U-Net depth; 0: log2(image_size) (unet_256 -> 8)
  config.model.g_base_features = 64        # pix2pix ngf
  config.model.dropout_rate = 0.5
  config.model.d_base_features = 64        # pix2pix ndf
  config.model.d_layers = 3                # PatchGAN n_layers: 70x70 receptive field

  config.loss = ml_collections.ConfigDict()
  config.loss.gan = "vanilla"              # colorgan.losses.GAN_LOSSES
  config.loss.gan_weight = 1.0
  config.loss.reconstruction = "l1"        # colorgan.losses.RECONSTRUCTION_LOSSES
  config.loss.l1_weight = 100.0            # lambda of the reconstruction term, whichever it is
  config.loss.huber_delta = 0.1            # in model ab units (x110 for Lab units)
  config.loss.penalty = "auto"             # none | gp | r1; auto: the objective's own (gp for wgan_gp)
  config.loss.penalty_weight = 10.0        # lambda of the gradient penalty / gamma of R1

  config.optim = ml_collections.ConfigDict()
  config.optim.g_learning_rate = 2e-4
  config.optim.d_learning_rate = 2e-4
  config.optim.b1 = 0.5
  config.optim.b2 = 0.999

  config.data = ml_collections.ConfigDict()
  config.data.source = "bundled"   # bundled: the photos shipped inside scikit-image and scikit-learn
  config.data.load_size = 286      # short side resized to this, then cropped to image_size (pix2pix)
  config.data.resize_mode = "crop"  # crop: resize short side + crop; resize: squash to a square
  config.data.random_flip = True
  config.data.num_parallel_calls = -1  # -1: tf.data AUTOTUNE
  config.data.prefetch = 2

  if arg == "smoke":  # seconds on a laptop CPU: tiny images, tiny nets
    config.image_size = 32
    config.batch_size = 4
    config.total_steps = 10
    config.model.g_base_features = 8
    config.model.d_base_features = 8
    config.data.load_size = 36
    config.log_every_steps = config.sample_every_steps = config.checkpoint_every_steps = 5
  elif arg:
    raise ValueError(f"configs/default.py takes no argument or 'smoke', got {arg!r}")
  return config
