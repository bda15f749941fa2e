"""Every registered loss against values worked out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorgan.training import losses

# Patch logits [B=2, 1, 1, 1].
REAL = jnp.array([2.0, -1.0]).reshape(2, 1, 1, 1)
FAKE = jnp.array([0.5, -0.5]).reshape(2, 1, 1, 1)
# softplus by hand: log(1 + e^-2) = 0.126928, log(1 + e^1) = 1.313262,
#                   log(1 + e^0.5) = 0.974077, log(1 + e^-0.5) = 0.474077.
BCE_REAL_AS_REAL = (0.126928 + 1.313262) / 2  # 0.720095
BCE_FAKE_AS_FAKE = (0.974077 + 0.474077) / 2  # 0.724077
BCE_FAKE_AS_REAL = (0.474077 + 0.974077) / 2  # 0.724077


@pytest.mark.parametrize(
  "name, d_expected, g_expected",
  [
    ("vanilla", 0.5 * (BCE_REAL_AS_REAL + BCE_FAKE_AS_FAKE), BCE_FAKE_AS_REAL),
    ("nonsaturating", BCE_REAL_AS_REAL + BCE_FAKE_AS_FAKE, BCE_FAKE_AS_REAL),
    ("minimax", BCE_REAL_AS_REAL + BCE_FAKE_AS_FAKE, -BCE_FAKE_AS_FAKE),
    # 0.5 * (mean((2-1)^2, (-1-1)^2) + mean(0.5^2, 0.5^2)) = 0.5 * (2.5 + 0.25); mean(0.25, 2.25)
    ("lsgan", 1.375, 1.25),
    # mean(relu(-1), relu(2)) + mean(relu(1.5), relu(0.5)) = 1 + 1; -mean(0.5, -0.5)
    ("hinge", 2.0, 0.0),
    # mean(fake) - mean(real) = 0 - 0.5
    ("wgan_gp", -0.5, 0.0),
  ],
)
def test_adversarial_losses(name, d_expected, g_expected):
  loss = losses.GAN_LOSSES[name]
  np.testing.assert_allclose(
    loss.discriminator(real_logits=REAL, fake_logits=FAKE), d_expected, atol=2e-6
  )
  np.testing.assert_allclose(loss.generator(fake_logits=FAKE), g_expected, atol=2e-6)


def test_every_adversarial_loss_is_tested():
  assert set(losses.GAN_LOSSES) == {
    "vanilla",
    "nonsaturating",
    "minimax",
    "lsgan",
    "hinge",
    "wgan_gp",
  }


def _linear_discriminator(ab):
  """logits[b] = sum over pixels of 0.6 a + 0.8 b: d(sum logits)/d(ab) = (0.6, 0.8) everywhere."""
  return jnp.sum(ab * jnp.array([0.6, 0.8]), axis=(1, 2, 3)).reshape(-1, 1, 1, 1)


def test_penalties():
  real = jnp.ones((3, 2, 2, 2))
  fake = -jnp.ones((3, 2, 2, 2))
  rng = None
  # Per example ||grad||^2 = 4 pixels * (0.36 + 0.64) = 4, so ||grad|| = 2.
  np.testing.assert_allclose(
    losses.gradient_penalty(
      _linear_discriminator, real_ab=real, fake_ab=fake, rng=jax.random.key(0)
    ),
    (2 - 1) ** 2,
    rtol=1e-5,
  )
  np.testing.assert_allclose(
    losses.r1_penalty(_linear_discriminator, real_ab=real, fake_ab=fake, rng=rng),
    0.5 * 4,
    rtol=1e-6,
  )
  assert float(losses.no_penalty(_linear_discriminator, real_ab=real, fake_ab=fake, rng=rng)) == 0


def test_r1_penalty_quadratic_discriminator():
  # D(ab) = sum(ab^2): grad = 2 ab; at ab = 0.5 everywhere on 1x1x2: ||grad||^2 = 2 * 1^2 = 2.
  quadratic = lambda ab: jnp.sum(ab**2, axis=(1, 2, 3)).reshape(-1, 1, 1, 1)  # noqa: E731
  real = jnp.full((2, 1, 1, 2), 0.5)
  np.testing.assert_allclose(
    losses.r1_penalty(quadratic, real_ab=real, fake_ab=real, rng=None), 0.5 * 2.0, rtol=1e-6
  )


def test_gradient_penalty_interpolates_between_real_and_fake():
  # D(ab) = sum(ab^2) on one pixel of one channel: ||grad|| = 2 |x_hat|, x_hat between fake=0 and
  # real=1 at alpha: GP = (2 alpha - 1)^2 with alpha ~ U(0, 1), never outside [0, 1].
  quadratic = lambda ab: jnp.sum(ab**2, axis=(1, 2, 3)).reshape(-1, 1, 1, 1)  # noqa: E731
  real, fake = jnp.ones((1000, 1, 1, 1)), jnp.zeros((1000, 1, 1, 1))
  gp = float(losses.gradient_penalty(quadratic, real_ab=real, fake_ab=fake, rng=jax.random.key(1)))
  # E[(2 alpha - 1)^2] = 1/3 for alpha uniform.
  assert abs(gp - 1 / 3) < 0.03


def test_resolve_penalty():
  assert losses.resolve_penalty("wgan_gp", "auto") == "gp"
  assert losses.resolve_penalty("vanilla", "auto") == "none"
  assert losses.resolve_penalty("hinge", "r1") == "r1"


PRED = jnp.array([0.0, 0.5, -0.2])
TARGET = jnp.array([0.1, 0.0, 0.3])  # errors 0.1, 0.5, 0.5


@pytest.mark.parametrize(
  "name, expected",
  [
    ("l1", (0.1 + 0.5 + 0.5) / 3),
    ("l2", (0.01 + 0.25 + 0.25) / 3),
    # delta 0.2: 0.5 * 0.1^2 = 0.005; 0.2 * (0.5 - 0.1) = 0.08 (twice)
    ("huber", (0.005 + 0.08 + 0.08) / 3),
  ],
)
def test_reconstruction_losses(name, expected):
  got = losses.RECONSTRUCTION_LOSSES[name](PRED, TARGET, huber_delta=0.2)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
