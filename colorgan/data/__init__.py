"""Data: decoding (Pillow), the sources (files, TFDS) and the tf.data pipelines."""
