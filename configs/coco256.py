"""The tutorial's setting ("Image Colorization with U-Net and GAN"): COCO photos via TFDS at 256 px.

The tutorial trains on 8,000 random COCO photos and validates on 2,000, each resized to a 256x256
square (no crop) with random horizontal flips, at batch 16 for 100 epochs (50,000 steps). TFDS shuffles
examples when it prepares a dataset, so the first 8,000 of its train split are a random sample.

  tfds build coco/2017 --data_dir=~/tensorflow_datasets   # once: downloads ~25 GB, prepares the splits
  python -m colorgan.main --config=configs/coco256.py --workdir=workdirs/coco256

(or add --config.data.tfds_download=True to let the run download and prepare it).
"""

import os
import sys

# config_flags loads this file by path: make its sibling configs importable from any working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402


def get_config():
  config = default.get_config()
  config.image_size = 256
  config.batch_size = 16
  config.total_steps = 50_000  # 100 epochs of 8,000 photos
  config.data.source = "tfds"
  config.data.tfds_name = "coco/2017"
  config.data.train_split = "train[:8000]"
  config.data.eval_split = "validation[:2000]"
  config.data.resize_mode = "resize"  # the tutorial's transforms.Resize((256, 256))
  config.data.random_flip = True
  return config
