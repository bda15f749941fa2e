"""The pix2pix recipe at 256 px on ImageNet (ILSVRC 2012) via TFDS: 1.28 M photos, 50,000 for eval.

ImageNet needs a manual download: get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from
https://image-net.org (an account and accepting its terms), put both in one folder, then prepare it:

  tfds build imagenet2012 --manual_dir=/path/to/tars --data_dir=~/tensorflow_datasets
  python -m colorgan.main --config=configs/imagenet256.py --workdir=workdirs/imagenet256

Photos are resized to a 286-px short side and randomly cropped to 256 (pix2pix's load/crop), with
random flips; evaluation uses center crops of the validation split. The few grayscale photos in
ImageNet are skipped at decode time and named in the log.
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
  config.total_steps = 400_000  # 5 epochs of 1.28 M photos at batch 16
  config.data.source = "tfds"
  config.data.tfds_name = "imagenet2012"
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.resize_mode = "crop"
  config.data.load_size = 286
  config.data.shuffle_window = 4096  # ~0.5 GB of encoded photos per host
  return config
