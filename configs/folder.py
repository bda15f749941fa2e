"""The pix2pix recipe at 256 px on a folder of your own photos.

  python -m colorgan.main --config=configs/folder.py --config.data.path=/path/to/photos \
      --workdir=workdirs/photos

The folder is read recursively (.jpg .jpeg .png .webp .bmp .tif .tiff, any case). When it has train/
and val/ subfolders those are the split; otherwise 5% of the files (config.data.eval_fraction, chosen
by a hash of their relative path) are held out for evaluation and sample grids. Files that cannot be
used (corrupt, truncated, not images, grayscale, too large) are skipped and listed in the log.
"""

import os
import sys

# config_flags loads this file by path: make its sibling configs importable from any working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402


def get_config():
  config = default.get_config()
  config.data.source = "folder"
  config.data.path = ""  # required: --config.data.path=/path/to/photos
  return config
