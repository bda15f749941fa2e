"""Adversarial objectives, discriminator penalties and reconstruction losses, registered by name.

Every loss is a small pure function of logits or arrays returning a scalar. The training step looks
them up by the names in `config.loss` and never special-cases one, so a new loss is:

  1. a function (two for an adversarial objective: the discriminator's and the generator's side),
  2. one registry line below,
  3. its name in a config: `--config.loss.gan=my_loss`.

Logits are raw discriminator outputs [B, H', W', 1]; each patch counts as one sample, as in pix2pix.
"""

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from colorgan import color
from colorgan.models import ab_bins


# ----------------------------------------------------------------------------- adversarial objectives
class GanLoss(NamedTuple):
  """One adversarial objective: what D minimizes and what G minimizes.

  discriminator(*, real_logits, fake_logits) -> scalar
  generator(*, fake_logits) -> scalar
  default_penalty: the discriminator penalty the objective is defined with ("none", "gp", "r1").
  """

  discriminator: Callable[..., jax.Array]
  generator: Callable[..., jax.Array]
  default_penalty: str = "none"


def _bce(logits, target: float):
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def vanilla_d(*, real_logits, fake_logits):
  """pix2pix / the tutorial: BCE against 1 for real and 0 for fake, halved so D learns slower."""
  return 0.5 * (_bce(real_logits, 1.0) + _bce(fake_logits, 0.0))


def vanilla_g(*, fake_logits):
  """pix2pix / the tutorial: BCE of the fakes against 1 (the non-saturating trick)."""
  return _bce(fake_logits, 1.0)


def nonsaturating_d(*, real_logits, fake_logits):
  """Goodfellow et al.'s D loss as written in StyleGAN: softplus(-D(real)) + softplus(D(fake))."""
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def nonsaturating_g(*, fake_logits):
  """-log sigmoid(D(fake)): strong gradients while D rejects the fakes."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def minimax_g(*, fake_logits):
  """The original saturating objective: G minimizes log(1 - sigmoid(D(fake)))."""
  return -jnp.mean(jax.nn.softplus(fake_logits))


def lsgan_d(*, real_logits, fake_logits):
  """Least squares GAN (Mao et al.), targets 1 / 0, halved as in pix2pix."""
  return 0.5 * (jnp.mean((real_logits - 1.0) ** 2) + jnp.mean(fake_logits**2))


def lsgan_g(*, fake_logits):
  return jnp.mean((fake_logits - 1.0) ** 2)


def hinge_d(*, real_logits, fake_logits):
  """Hinge loss (Lim & Ye; SAGAN, BigGAN)."""
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def wasserstein_g(*, fake_logits):
  """-D(fake): the generator side of hinge and WGAN."""
  return -jnp.mean(fake_logits)


def wasserstein_d(*, real_logits, fake_logits):
  """WGAN critic loss D(fake) - D(real); needs a Lipschitz constraint (the gradient penalty)."""
  return jnp.mean(fake_logits) - jnp.mean(real_logits)


GAN_LOSSES: dict[str, GanLoss] = {
  "vanilla": GanLoss(vanilla_d, vanilla_g),
  "nonsaturating": GanLoss(nonsaturating_d, nonsaturating_g),
  "minimax": GanLoss(nonsaturating_d, minimax_g),
  "lsgan": GanLoss(lsgan_d, lsgan_g),
  "hinge": GanLoss(hinge_d, wasserstein_g),
  "wgan_gp": GanLoss(wasserstein_d, wasserstein_g, default_penalty="gp"),
}


# ----------------------------------------------------------------------------- discriminator penalties
# A penalty is f(d_of_ab, *, real_ab, fake_ab, rng) -> scalar, where d_of_ab(ab) -> logits is the
# discriminator with L and its variables fixed. Gradients are taken with respect to ab, the part of D's
# input that differs between real and fake (L is the shared condition).
def _input_grad_sq_norm(d_of_ab, ab):
  """Per-example squared L2 norm of d(sum of logits)/d(ab)."""
  grads = jax.grad(lambda x: jnp.sum(d_of_ab(x)))(ab)
  return jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1)


def no_penalty(d_of_ab, *, real_ab, fake_ab, rng):
  del d_of_ab, fake_ab, rng
  return jnp.zeros((), real_ab.dtype)


def gradient_penalty(d_of_ab, *, real_ab, fake_ab, rng):
  """WGAN-GP (Gulrajani et al.): E[(||grad D(x_hat)|| - 1)^2] on random real/fake interpolates."""
  alpha = jax.random.uniform(rng, (real_ab.shape[0], 1, 1, 1), real_ab.dtype)
  interpolates = alpha * real_ab + (1.0 - alpha) * fake_ab
  # sqrt has an infinite slope at 0: a tiny epsilon keeps the second derivative finite.
  norms = jnp.sqrt(_input_grad_sq_norm(d_of_ab, interpolates) + 1e-12)
  return jnp.mean((norms - 1.0) ** 2)


def r1_penalty(d_of_ab, *, real_ab, fake_ab, rng):
  """R1 (Mescheder et al.): 0.5 * E[||grad D(real)||^2]; multiply by gamma via loss.penalty_weight."""
  del fake_ab, rng
  return 0.5 * jnp.mean(_input_grad_sq_norm(d_of_ab, real_ab))


PENALTIES: dict[str, Callable[..., jax.Array]] = {
  "none": no_penalty,
  "gp": gradient_penalty,
  "r1": r1_penalty,
}


# ----------------------------------------------------------------------------- reconstruction losses
def l1_loss(pred, target, *, huber_delta: float):
  del huber_delta
  return jnp.mean(jnp.abs(pred - target))


def l2_loss(pred, target, *, huber_delta: float):
  del huber_delta
  return jnp.mean(optax.squared_error(pred, target))


def huber_loss(pred, target, *, huber_delta: float):
  """0.5 e^2 where |e| <= delta, delta (|e| - 0.5 delta) beyond: L2 near 0, L1 on outliers."""
  return jnp.mean(optax.huber_loss(pred, target, delta=huber_delta))


RECONSTRUCTION_LOSSES: dict[str, Callable[..., jax.Array]] = {
  "l1": l1_loss,
  "l2": l2_loss,
  "huber": huber_loss,
}


def resolve_penalty(gan: str, penalty: str) -> str:
  """The penalty in force: `auto` means the objective's own (gp for wgan_gp, none otherwise)."""
  return GAN_LOSSES[gan].default_penalty if penalty == "auto" else penalty


# ----------------------------------------------------------------------------- colourfulness
# Hasler & Suesstrunk's colourfulness (color.colorfulness) on RGB in [0, 1] (evaluation.metrics
# reports it x255), with an epsilon in its square roots: a gray image (every std 0) has finite
# gradients.
COLORFULNESS_EPS = 1e-12


def colorfulness_match(pred_rgb, true_rgb, *, margin: float):
  """Two-sided: mean over images of max(0, |CF(pred) - CF(true)| - margin), CF on [0, 1] RGB."""
  cf = functools.partial(color.colorfulness, eps=COLORFULNESS_EPS)
  gap = jnp.abs(cf(pred_rgb) - cf(jax.lax.stop_gradient(true_rgb)))
  return jnp.mean(jax.nn.relu(gap - margin))


def colorfulness_hinge(pred_rgb, true_rgb, *, margin: float):
  """One-sided: mean of max(0, CF(true) - CF(pred) - margin): only a duller result than the photo
  is penalized."""
  cf = functools.partial(color.colorfulness, eps=COLORFULNESS_EPS)
  gap = cf(jax.lax.stop_gradient(true_rgb)) - cf(pred_rgb)
  return jnp.mean(jax.nn.relu(gap - margin))


def colorfulness_ddcolor(pred_rgb, true_rgb, *, margin: float):
  """DDColor's ColorfulnessLoss before its weight: sum over images of (1 - CF(pred)), unbiased
  standard deviations; it pushes every image toward more colour whatever the photo's (the control)."""
  del true_rgb, margin
  return jnp.sum(1.0 - color.colorfulness(pred_rgb, ddof=1, eps=COLORFULNESS_EPS))


# config.loss.colorfulness -> f(pred_rgb, true_rgb, *, margin) -> scalar; "none": no such term.
COLORFULNESS_LOSSES: dict[str, Callable[..., jax.Array]] = {
  "match": colorfulness_match,
  "hinge": colorfulness_hinge,
  "ddcolor": colorfulness_ddcolor,
}


# ----------------------------------------------------------------------------- feature matching
def feature_matching(real_features, fake_features):
  """pix2pixHD's discriminator feature matching: the mean over D's intermediate layers of the mean
  absolute difference between its features on the real and on the generated input (real ones fixed)."""
  terms = [
    jnp.mean(jnp.abs(fake - jax.lax.stop_gradient(real)))
    for real, fake in zip(real_features, fake_features, strict=True)
  ]
  return sum(terms) / len(terms)


# ----------------------------------------------------------------------------- classification head
def classification(logits, real_ab, class_weights):
  """Zhang et al.'s rebalanced cross-entropy: logits [B, H, W, Q] against the soft encoding of the
  true ab (model scale), each pixel weighted by its nearest bin's rebalancing weight [Q]."""
  targets, nearest = ab_bins.soft_encode(jax.lax.stop_gradient(color.unscale_ab(real_ab)))
  cross_entropy = -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)
  return jnp.mean(class_weights[nearest] * cross_entropy)
