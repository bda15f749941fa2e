"""FID and KID from Inception features: streaming statistics, the two distances, statistics files.

  FeatureStats      mean and covariance of features accumulated batch by batch in float64 on the
                    host (Chan et al.'s pairwise update: the result does not depend on how the
                    features were batched), optionally keeping the features themselves for KID.
  frechet_distance  pytorch_fid.fid_score.calculate_frechet_distance, step for step: scipy's sqrtm of
                    sigma1 . sigma2, eps * I added to both covariances when that square root is not
                    finite, the real part when a tiny imaginary one is left.
  fid               the FID of two Stats: frechet_distance, or, below d images with the features
                    kept, the same trace exactly from the features (milliseconds, not ~15 s).
  kid               torch-fidelity's KID: the unbiased MMD^2 estimate with the polynomial kernel
                    (x . y / d + 1)^3, averaged over random subsets of both sets (seeded as
                    torch-fidelity is: numpy RandomState(2020), each subset drawn without
                    replacement, set 1 then set 2).
  save / load       pytorch-fid's statistics .npz (`mu`, `sigma`), so published reference statistics
                    can be used; colorgan's files add `num_images` and, when kept, `features` (which
                    pytorch-fid ignores), so KID can be computed against them too.

FID is biased upwards on small sets (it estimates a 2048 x 2048 covariance; below 2048 images that
covariance is singular, and the bias shrinks only as 1/N): on an eval split of a few hundred photos
compare FIDs of the same N only. KID's estimate is unbiased at any N, so it is the one to read there.
"""

import dataclasses

from absl import logging
import numpy as np
from scipy import linalg

from colorgan import errors
from colorgan import fileio

# torch-fidelity's defaults (torch_fidelity/defaults.py).
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_DEGREE = 3
KID_COEF0 = 1.0
KID_SEED = 2020


class FeatureStats:
  """Running mean and covariance (float64) of feature vectors; see the module docstring."""

  def __init__(self, dim: int, *, keep_features: bool = True):
    self.count = 0
    self._mean = np.zeros(dim, np.float64)
    self._m2 = np.zeros((dim, dim), np.float64)  # sum of outer products of deviations from the mean
    self._kept = [] if keep_features else None

  def add(self, features: np.ndarray) -> None:
    """Adds a batch of features, [n, dim] (any n, 0 included)."""
    x = np.asarray(features, np.float64)
    n = x.shape[0]
    if not n:
      return
    batch_mean = x.mean(axis=0)
    centered = x - batch_mean
    delta = batch_mean - self._mean
    total = self.count + n
    self._m2 += centered.T @ centered + np.outer(delta, delta) * (self.count * n / total)
    self._mean += delta * (n / total)
    self.count = total
    if self._kept is not None:
      self._kept.append(np.asarray(features, np.float32))

  @property
  def mu(self) -> np.ndarray:
    return self._mean.copy()

  @property
  def sigma(self) -> np.ndarray:
    """The unbiased covariance (np.cov's, N - 1 in the denominator): pytorch-fid's."""
    if self.count < 2:
      raise ValueError(f"a covariance needs at least 2 images, got {self.count}")
    return self._m2 / (self.count - 1)

  @property
  def features(self) -> np.ndarray | None:
    """The features added so far, float32 [count, dim], or None when not kept."""
    if self._kept is None:
      return None
    dim = self._mean.shape[0]
    return np.concatenate(self._kept) if self._kept else np.zeros((0, dim), np.float32)

  def summary(self) -> "Stats":
    return Stats(self.mu, self.sigma, self.count, self.features)


@dataclasses.dataclass(frozen=True)
class Stats:
  """What FID and KID need of one set of images."""

  mu: np.ndarray  # [d] float64
  sigma: np.ndarray  # [d, d] float64
  num_images: int | None  # None: a statistics file that does not say (pytorch-fid's)
  features: np.ndarray | None = None  # [N, d] float32, or None: KID cannot be computed


def save(path: str, stats: Stats) -> None:
  """Writes pytorch-fid's .npz (mu, sigma) plus num_images and features, atomically."""
  arrays = dict(mu=stats.mu, sigma=stats.sigma)
  if stats.num_images is not None:
    arrays["num_images"] = np.int64(stats.num_images)
  if stats.features is not None:
    arrays["features"] = stats.features
  with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
    np.savez_compressed(f, **arrays)


def load(path: str) -> Stats:
  """A statistics .npz: pytorch-fid's (mu, sigma) or colorgan's (with num_images, features).

  Raises:
    errors.StatsError: no such file, not a .npz, or no mu [d] and sigma [d, d] inside.
  """
  try:
    arrays = fileio.read_npz(path)
  except ValueError as e:
    raise errors.StatsError(str(e)) from None
  mu, sigma = arrays.get("mu"), arrays.get("sigma")
  if mu is None or sigma is None or mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
    raise errors.StatsError(
      f"{path} is not a statistics file: it needs arrays mu [d] and sigma [d, d] "
      f"(pytorch-fid's format), it has {', '.join(sorted(arrays)) or 'none'}"
    )
  features = arrays.get("features")
  if features is not None and (features.ndim != 2 or features.shape[1] != mu.size):
    features = None
  num = (
    int(arrays["num_images"])
    if "num_images" in arrays
    else (None if features is None else len(features))
  )
  return Stats(mu.astype(np.float64), sigma.astype(np.float64), num, features)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), as pytorch-fid computes it.

  Raises:
    ValueError: the square root keeps an imaginary part larger than 1e-3 on its diagonal (pytorch-fid
      raises there too).
  """
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(
      f"the two sets' statistics have different sizes ({mu1.shape[0]} and {mu2.shape[0]} features)"
    )
  diff = mu1 - mu2
  # The product may be nearly singular (always, below d images).
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    logging.warning(
      "FID: the covariance product is singular; adding %g to the diagonal of both "
      "covariances (as pytorch-fid does)",
      eps,
    )
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  # Numerical error may leave a slight imaginary component.
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(
        f"FID: the matrix square root has an imaginary component of "
        f"{np.max(np.abs(covmean.imag)):.3g}"
      )
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(stats_1: Stats, stats_2: Stats) -> float:
  """The FID of two sets. With both sets' features kept and no more images than features (an eval
  split of a few hundred photos), Tr sqrt(sigma1 sigma2) is computed exactly from them: it is the
  sum of the singular values of X1 X2^T / sqrt((n1 - 1)(n2 - 1)), X the centered features (the
  product's nonzero eigenvalues are those of that n1 x n1 matrix times its transpose). That is
  milliseconds where sqrtm of the singular 2048 x 2048 product takes ~15 s on 2 cores, and agrees
  with it to ~1e-6. Otherwise frechet_distance, as pytorch-fid computes it.

  Raises:
    ValueError: as frechet_distance.
  """
  f1, f2 = stats_1.features, stats_2.features
  dim = np.atleast_1d(stats_1.mu).size
  if f1 is None or f2 is None or max(len(f1), len(f2)) > dim or min(len(f1), len(f2)) < 2:
    return frechet_distance(stats_1.mu, stats_1.sigma, stats_2.mu, stats_2.sigma)
  if f1.shape[1] != f2.shape[1]:
    raise ValueError(
      f"the two sets' statistics have different sizes ({f1.shape[1]} and {f2.shape[1]} features)"
    )
  x1, x2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  x1, x2 = x1 - x1.mean(axis=0), x2 - x2.mean(axis=0)
  cross = x1 @ x2.T / np.sqrt((len(x1) - 1) * (len(x2) - 1))
  trace_sqrt = float(np.linalg.svd(cross, compute_uv=False).sum())
  diff = stats_1.mu - stats_2.mu
  traces = np.trace(stats_1.sigma) + np.trace(stats_2.sigma)
  return float(diff.dot(diff) + traces - 2 * trace_sqrt)


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 of two equal-size samples with k(a, b) = (a . b / d + 1)^3."""
  m, d = x.shape
  kernel = lambda a, b: (a @ b.T / d + KID_COEF0) ** KID_DEGREE  # noqa: E731
  k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
  off_diagonal = (k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))
  return off_diagonal / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)


def kid(
  features_1: np.ndarray,
  features_2: np.ndarray,
  *,
  subsets: int = KID_SUBSETS,
  subset_size: int = KID_SUBSET_SIZE,
  seed: int = KID_SEED,
) -> tuple[float, float]:
  """(mean, std) of the KID over `subsets` random subsets, as torch-fidelity computes it.

  The subset size is min(subset_size, N1, N2): torch-fidelity's 1000 where both sets have that
  many images; all of the smaller set's images below that (torch-fidelity refuses there).

  Raises:
    ValueError: a set with fewer than 2 images.
  """
  n1, n2 = len(features_1), len(features_2)
  m = min(subset_size, n1, n2)
  if m < 2:
    raise ValueError(f"KID needs at least 2 images in each set, got {n1} and {n2}")
  f1, f2 = np.asarray(features_1, np.float64), np.asarray(features_2, np.float64)
  rng = np.random.RandomState(seed)
  mmds = np.zeros(subsets)
  for i in range(subsets):
    x = f1[rng.choice(n1, m, replace=False)]
    y = f2[rng.choice(n2, m, replace=False)]
    mmds[i] = _polynomial_mmd2(x, y)
  return float(np.mean(mmds)), float(np.std(mmds))
