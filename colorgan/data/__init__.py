"""Data: decoding with Pillow (`decode`), the sources (`sources`: files; `tfds_source`: TFDS) and the
tf.data pipeline (`pipeline`). Importing the package imports none of them."""
