"""colorgan: grayscale-to-color with a pix2pix-style conditional GAN in JAX/Flax."""

__version__ = "0.1.0"
