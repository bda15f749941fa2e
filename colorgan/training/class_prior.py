"""The classification head's rebalancing weights, measured on the training photos when a run starts
(config.model.ab_head="classification"; models.ab_bins). They are part of the state, so a resumed run
uses the weights it started with."""

from absl import logging
import ml_collections
import numpy as np

from colorgan import color
from colorgan.data import pipeline
from colorgan.models import ab_bins


def estimate(
  config: ml_collections.ConfigDict, images: pipeline.Images, rows: tuple[int, int]
) -> np.ndarray:
  """Rebalancing weights [Q] from config.loss.class_prior_batches batches of the training stream
  (as the run's first batches: crops and flips included)."""
  counts = np.zeros(ab_bins.num_bins(), np.int64)
  stream = pipeline.create_train_dataset(config, images, rows=rows)
  batches = stream.take(config.loss.class_prior_batches).as_numpy_iterator()
  for batch in batches:
    ab = color.rgb_to_lab(batch["image"].astype(np.float32) / 255.0, np)[..., 1:]
    counts += np.bincount(ab_bins.nearest(ab).ravel(), minlength=len(counts))
  prior = ab_bins.smoothed_prior(counts)
  weights = ab_bins.rebalancing_weights(prior, config.loss.rebalance)
  logging.info(
    "Classification head: %d ab bins, %d of them seen in %d training pixels; rebalancing weights "
    "%.2f-%.2f (lambda %g)",
    len(counts),
    int(np.sum(counts > 0)),
    int(counts.sum()),
    weights.min(),
    weights.max(),
    config.loss.rebalance,
  )
  return weights
