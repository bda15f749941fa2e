"""Inference: photo I/O and geometry, the Colorizer, people's hint files, export."""
