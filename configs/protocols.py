"""The colorization papers' evaluation protocols, for --mode=evaluate (README "Metrics").

  :imagenet_val  ImageNet (ILSVRC 2012) validation, all 50,000 photos resized to 256x256: the table
                 of DDColor and of most papers since 2020 (FID against the same photos' ground truth).
  :coco_val      COCO 2017 validation, all 5,000 photos resized to 256x256 (DDColor's COCO table).

  python -m colorgan.main --mode=evaluate --workdir=workdirs/imagenet256 \
      --config=configs/protocols.py:imagenet_val

The generator comes from the run's checkpoint; this file picks the data (through TFDS: prepare the
dataset first, see configs/imagenet256.py and configs/coco256.py) and the metrics. FID and KID are
against the evaluated photos' own ground truth at 256 px (pytorch-fid's Inception: every report
names "fid_backend": "pytorch-fid-inception-2015-12-05"), LPIPS against each photo's ground truth.
The reference weights are read from weights/ (written by the README's conversion commands; a
missing file stops the run in one line), or from --config.eval.inception_weights=... and
--config.eval.lpips_weights=... . The few grayscale photos of ImageNet val are skipped (named in the
log): the report's num_images says how many were scored.
"""

import os
import sys

# config_flags loads this file by path: make its sibling configs importable from any working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402

PROTOCOLS = {
  "imagenet_val": dict(tfds_name="imagenet2012", train_split="train", eval_split="validation"),
  "coco_val": dict(tfds_name="coco/2017", train_split="train", eval_split="validation"),
}


def get_config(arg: str | None = None):
  if arg not in PROTOCOLS:
    raise ValueError(f"configs/protocols.py takes one of {', '.join(PROTOCOLS)}, got {arg!r}")
  config = default.get_config()
  config.image_size = 256
  config.data.source = "tfds"
  for key, value in PROTOCOLS[arg].items():
    config.data[key] = value
  config.data.resize_mode = "resize"  # the whole photo, resized to 256x256 (no crop)
  config.num_eval_images = 0  # all of them
  config.eval_batch_size = 64  # divides over 1, 2, 4, 8, ... devices
  config.eval.inception_weights = "weights/pt_inception-2015-12-05.npz"
  config.eval.lpips_weights = "weights/lpips_alex_v0.1.npz"
  return config
