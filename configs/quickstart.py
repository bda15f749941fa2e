"""The embedded default: a small colorization GAN trained on the photos shipped inside scikit-image
(astronaut, chelsea, coffee, rocket, motorcycle_left/right) and scikit-learn (china, flower).

64-px random crops of photos downscaled to a 80-px short side, so that each crop still shows an object.
Eight photos teach no general colorization: this run shows the machinery working and, within minutes on
2 CPU cores, colors appearing in the sample grid (workdir/samples/).

  make train
  python -m colorgan.main --config=configs/quickstart.py --workdir=workdirs/quickstart  # the same
"""

import os
import sys

# config_flags loads this file by path: make its sibling configs importable from any working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402


def get_config():
  config = default.get_config()
  config.image_size = 64  # U-Net depth 6
  config.batch_size = 8
  config.total_steps = 600
  config.model.g_base_features = 32
  config.model.d_base_features = 32
  config.data.source = "bundled"
  config.data.load_size = 80
  config.log_every_steps = 25
  config.sample_every_steps = 100
  config.checkpoint_every_steps = 200
  config.eval_every_steps = (
    200  # the bundled photos are both splits: this shows fit, not generalization
  )
  return config
