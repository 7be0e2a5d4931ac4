"""Tests of the closed-form Gaussian divergences against float64 references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from jax.test_util import check_grads
from scipy import integrate

from divergences import gaussian

# Jitting compiles each signature once, which makes the file much faster than
# compiling every operation eagerly.
# The eager functions are checked against these in test_jit_matches_eager.
gaussian_kl_diag = jax.jit(gaussian.gaussian_kl_diag)
gaussian_renyi_diag = jax.jit(
  gaussian.gaussian_renyi_diag, static_argnames="alpha"
)
gaussian_squared_hellinger_diag = jax.jit(
  gaussian.gaussian_squared_hellinger_diag
)
gaussian_wasserstein2_squared_diag = jax.jit(
  gaussian.gaussian_wasserstein2_squared_diag
)
gaussian_kl = jax.jit(gaussian.gaussian_kl)
gaussian_renyi = jax.jit(gaussian.gaussian_renyi, static_argnames="alpha")
gaussian_squared_hellinger = jax.jit(gaussian.gaussian_squared_hellinger)
gaussian_wasserstein2_squared = jax.jit(gaussian.gaussian_wasserstein2_squared)

EAGER_DIAG_FUNCTIONS = {
  "kl": gaussian.gaussian_kl_diag,
  "renyi": functools.partial(gaussian.gaussian_renyi_diag, alpha=0.7),
  "hellinger": gaussian.gaussian_squared_hellinger_diag,
  "w2": gaussian.gaussian_wasserstein2_squared_diag,
}
EAGER_FULL_FUNCTIONS = {
  "kl": gaussian.gaussian_kl,
  "renyi": functools.partial(gaussian.gaussian_renyi, alpha=0.7),
  "hellinger": gaussian.gaussian_squared_hellinger,
  "w2": gaussian.gaussian_wasserstein2_squared,
}
DIAG_FUNCTIONS = {k: jax.jit(f) for k, f in EAGER_DIAG_FUNCTIONS.items()}
FULL_FUNCTIONS = {k: jax.jit(f) for k, f in EAGER_FULL_FUNCTIONS.items()}


@pytest.fixture
def x64():
  """Enables float64 for the duration of one test."""
  with jax.enable_x64(True):
    yield


def random_spd(rng, batch, dim):
  """Returns well-conditioned random SPD matrices, shape [*batch, dim, dim]."""
  factor = rng.normal(size=(*batch, dim, dim))
  return factor @ np.swapaxes(factor, -1, -2) / dim + 0.5 * np.eye(dim)


def random_full_pair(rng, batch=(4,), dim=3):
  """Returns (p_mean, p_cov, q_mean, q_cov) as float64 NumPy arrays."""
  return (
    rng.normal(size=(*batch, dim)),
    random_spd(rng, batch, dim),
    rng.normal(size=(*batch, dim)),
    random_spd(rng, batch, dim),
  )


def random_diag_pair(rng, batch=(4,), dim=3):
  """Returns (p_mean, p_scale, q_mean, q_scale) as float64 NumPy arrays."""
  return (
    rng.normal(size=(*batch, dim)),
    rng.uniform(0.5, 2.0, size=(*batch, dim)),
    rng.normal(size=(*batch, dim)),
    rng.uniform(0.5, 2.0, size=(*batch, dim)),
  )


def diag_to_full(p_mean, p_scale, q_mean, q_scale):
  """Returns the full-covariance parameters of diagonal Gaussians."""
  as_cov = lambda scale: np.einsum(
    "...i,ij->...ij", scale**2, np.eye(len(scale[0]))
  )
  return p_mean, as_cov(p_scale), q_mean, as_cov(q_scale)


# Float64 NumPy references, written from the densities rather than from the
# formulas under test.


def reference_kl(p_mean, p_cov, q_mean, q_cov):
  """KL(P||Q) from the expectation of log p - log q, for one pair."""
  q_precision = np.linalg.inv(q_cov)
  diff = p_mean - q_mean
  _, p_log_det = np.linalg.slogdet(p_cov)
  _, q_log_det = np.linalg.slogdet(q_cov)
  return 0.5 * (
    np.trace(q_precision @ p_cov)
    - len(p_mean)
    + diff @ q_precision @ diff
    + q_log_det
    - p_log_det
  )


def reference_log_integral(p_mean, p_cov, q_mean, q_cov, alpha):
  """log of the integral of p^alpha q^(1-alpha), in precision form."""
  p_precision, q_precision = np.linalg.inv(p_cov), np.linalg.inv(q_cov)
  precision = alpha * p_precision + (1 - alpha) * q_precision
  linear = alpha * p_precision @ p_mean + (1 - alpha) * q_precision @ q_mean
  constant = -0.5 * (
    alpha * p_mean @ p_precision @ p_mean
    + (1 - alpha) * q_mean @ q_precision @ q_mean
  )
  constant -= 0.5 * alpha * np.linalg.slogdet(2 * np.pi * p_cov)[1]
  constant -= 0.5 * (1 - alpha) * np.linalg.slogdet(2 * np.pi * q_cov)[1]
  completed = 0.5 * linear @ np.linalg.solve(precision, linear)
  volume = 0.5 * np.linalg.slogdet(precision / (2 * np.pi))[1]
  return constant + completed - volume


def reference_renyi(p_mean, p_cov, q_mean, q_cov, alpha):
  log_integral = reference_log_integral(p_mean, p_cov, q_mean, q_cov, alpha)
  return log_integral / (alpha - 1)


def reference_hellinger(p_mean, p_cov, q_mean, q_cov):
  log_integral = reference_log_integral(p_mean, p_cov, q_mean, q_cov, 0.5)
  return 1 - np.exp(log_integral)


def reference_w2(p_mean, p_cov, q_mean, q_cov):
  """The Givens-Shortt formula with scipy's general matrix square root."""
  q_root = scipy.linalg.sqrtm(q_cov)
  cross = scipy.linalg.sqrtm(q_root @ p_cov @ q_root)
  trace = np.trace(p_cov + q_cov - 2 * np.real(cross))
  return np.sum((p_mean - q_mean) ** 2) + trace


def reference_batched(reference, *arrays, **kwargs):
  """Applies a single-pair reference to each row of a batch."""
  rows = zip(*arrays, strict=True)
  return np.array([reference(*row, **kwargs) for row in rows])


def quad_1d(integrand):
  return integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-13)[0]


def quad_renyi_1d(p_mean, p_scale, q_mean, q_scale, alpha):
  """Renyi divergence of two 1-D Gaussians by numerical integration."""
  p = scipy.stats.norm(p_mean, p_scale)
  q = scipy.stats.norm(q_mean, q_scale)
  integrand = lambda x: np.exp(alpha * p.logpdf(x) + (1 - alpha) * q.logpdf(x))
  return np.log(quad_1d(integrand)) / (alpha - 1)


def quad_hellinger_1d(p_mean, p_scale, q_mean, q_scale):
  p = scipy.stats.norm(p_mean, p_scale)
  q = scipy.stats.norm(q_mean, q_scale)
  return 1 - quad_1d(lambda x: np.sqrt(p.pdf(x) * q.pdf(x)))


def quad_kl_1d(p_mean, p_scale, q_mean, q_scale):
  p = scipy.stats.norm(p_mean, p_scale)
  q = scipy.stats.norm(q_mean, q_scale)
  return quad_1d(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)))


PAIRS_1D = [(0.0, 1.0, 1.0, 1.0), (0.3, 0.8, -0.5, 1.3), (1.0, 2.0, 0.0, 1.5)]


class TestKL:
  def test_kl_diag_hand_values(self):
    ones = jnp.ones(1)
    shifted = gaussian_kl_diag(0 * ones, ones, ones, ones)
    scaled = gaussian_kl_diag(0 * ones, ones, 0 * ones, 2 * ones)
    assert np.isclose(shifted, 0.5, rtol=1e-6)
    assert np.isclose(scaled, 0.5 * (0.25 - 1 + np.log(4)), rtol=1e-6)

  def test_kl_full_hand_value(self):
    value = gaussian_kl(
      jnp.zeros(2), jnp.eye(2), jnp.array([1.0, 2.0]), jnp.eye(2)
    )
    assert np.isclose(value, 2.5, rtol=1e-6)

  @pytest.mark.parametrize("pair", PAIRS_1D)
  def test_kl_diag_matches_quadrature(self, x64, pair):
    value = gaussian_kl_diag(*(np.array([v]) for v in pair))
    assert np.isclose(value, quad_kl_1d(*pair), rtol=1e-8, atol=1e-10)

  def test_kl_full_matches_reference(self, x64, rng):
    arrays = random_full_pair(rng)
    value = gaussian_kl(*arrays)
    assert value.dtype == jnp.float64
    np.testing.assert_allclose(
      value, reference_batched(reference_kl, *arrays), rtol=1e-10
    )

  def test_kl_full_matches_scipy_sampling(self, x64, rng):
    p_mean, p_cov, q_mean, q_cov = (a[0] for a in random_full_pair(rng))
    p = scipy.stats.multivariate_normal(p_mean, p_cov)
    q = scipy.stats.multivariate_normal(q_mean, q_cov)
    samples = p.rvs(size=200_000, random_state=rng)
    log_ratio = p.logpdf(samples) - q.logpdf(samples)
    standard_error = log_ratio.std() / np.sqrt(len(log_ratio))
    value = gaussian_kl(p_mean, p_cov, q_mean, q_cov)
    assert abs(value - log_ratio.mean()) < 4 * standard_error

  def test_kl_float32_close_to_reference(self, rng):
    arrays = random_full_pair(rng)
    value = gaussian_kl(*(a.astype(np.float32) for a in arrays))
    assert value.dtype == jnp.float32
    expected = reference_batched(reference_kl, *arrays)
    np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5)

  def test_kl_not_symmetric(self):
    ones = jnp.ones(1)
    forward = gaussian_kl_diag(0 * ones, ones, ones, 2 * ones)
    backward = gaussian_kl_diag(ones, 2 * ones, 0 * ones, ones)
    assert not np.isclose(forward, backward)


class TestRenyi:
  @pytest.mark.parametrize("alpha", [0.3, 0.5, 2.0, 3.0])
  @pytest.mark.parametrize("pair", PAIRS_1D)
  def test_renyi_diag_matches_quadrature(self, x64, pair, alpha):
    arrays = (np.array([v]) for v in pair)
    value = gaussian_renyi_diag(*arrays, alpha=alpha)
    p_mean, p_scale, q_mean, q_scale = pair
    if alpha * q_scale**2 + (1 - alpha) * p_scale**2 <= 0:
      # The integrand grows without bound, so the divergence is infinite.
      assert value == np.inf
    else:
      expected = quad_renyi_1d(*pair, alpha)
      assert np.isclose(value, expected, rtol=1e-7, atol=1e-10)

  @pytest.mark.parametrize("alpha", [0.3, 0.7, 1.5])
  def test_renyi_full_matches_reference(self, x64, rng, alpha):
    arrays = random_full_pair(rng)
    # Scale P down so that alpha * Sq + (1 - alpha) Sp stays SPD for 1.5.
    arrays = (arrays[0], 0.3 * arrays[1], arrays[2], arrays[3])
    value = gaussian_renyi(*arrays, alpha=alpha)
    expected = reference_batched(reference_renyi, *arrays, alpha=alpha)
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(value, expected, rtol=1e-9)

  def test_renyi_alpha_one_is_kl(self, rng):
    diag = random_diag_pair(rng)
    full = random_full_pair(rng)
    renyi_diag = gaussian_renyi_diag(*diag, alpha=1.0)
    renyi_full = gaussian_renyi(*full, alpha=1)
    np.testing.assert_array_equal(renyi_diag, gaussian_kl_diag(*diag))
    np.testing.assert_array_equal(renyi_full, gaussian_kl(*full))

  @pytest.mark.parametrize("alpha", [1 - 1e-5, 1 + 1e-5])
  def test_renyi_tends_to_kl(self, x64, rng, alpha):
    diag = random_diag_pair(rng)
    full = random_full_pair(rng)
    renyi_diag = gaussian_renyi_diag(*diag, alpha=alpha)
    renyi_full = gaussian_renyi(*full, alpha=alpha)
    kl_diag = gaussian_kl_diag(*diag)
    kl_full = gaussian_kl(*full)
    np.testing.assert_allclose(renyi_diag, kl_diag, rtol=1e-4)
    np.testing.assert_allclose(renyi_full, kl_full, rtol=1e-4)

  def test_renyi_nondecreasing_in_alpha(self, x64, rng):
    arrays = random_full_pair(rng)
    arrays = (arrays[0], 0.3 * arrays[1], arrays[2], arrays[3])
    alphas = [0.2, 0.5, 1.0, 1.2, 1.5]
    values = np.stack([gaussian_renyi(*arrays, alpha=a) for a in alphas])
    assert np.all(np.diff(values, axis=0) >= -1e-12)

  def test_renyi_diag_infinite_outside_domain(self):
    # alpha q_var + (1 - alpha) p_var = 2 * 1 - 9 < 0 in the second dim.
    p_scale = jnp.array([[1.0, 3.0], [1.0, 1.0]])
    args = (jnp.zeros((2, 2)), p_scale, jnp.ones((2, 2)), jnp.ones((2, 2)))
    value = gaussian_renyi_diag(*args, alpha=2.0)
    assert value[0] == jnp.inf
    assert np.isfinite(value[1])

  def test_renyi_full_infinite_outside_domain(self):
    p_cov = jnp.stack([jnp.diag(jnp.array([1.0, 9.0])), jnp.eye(2)])
    args = (jnp.zeros((2, 2)), p_cov, jnp.ones((2, 2)), jnp.eye(2))
    value = gaussian_renyi(*args, alpha=2.0)
    assert value[0] == jnp.inf
    assert np.isfinite(value[1])

  def test_renyi_infinite_rows_have_finite_gradients(self):
    p_scale = jnp.array([[1.0, 3.0], [1.0, 1.0]])
    args = (jnp.zeros((2, 2)), jnp.ones((2, 2)), jnp.ones((2, 2)))

    def finite_sum_diag(scale):
      value = gaussian_renyi_diag(args[0], scale, *args[1:], alpha=2)
      return jnp.sum(jnp.where(jnp.isfinite(value), value, 0.0))

    def finite_sum_full(scale):
      cov = jnp.einsum("...i,ij->...ij", scale**2, jnp.eye(2))
      value = gaussian_renyi(args[0], cov, args[1], cov[1], alpha=2)
      return jnp.sum(jnp.where(jnp.isfinite(value), value, 0.0))

    assert np.all(np.isfinite(jax.jit(jax.grad(finite_sum_diag))(p_scale)))
    assert np.all(np.isfinite(jax.jit(jax.grad(finite_sum_full))(p_scale)))


class TestSquaredHellinger:
  @pytest.mark.parametrize("pair", PAIRS_1D)
  def test_hellinger_diag_matches_quadrature(self, x64, pair):
    arrays = (np.array([v]) for v in pair)
    value = gaussian_squared_hellinger_diag(*arrays)
    assert np.isclose(value, quad_hellinger_1d(*pair), rtol=1e-8, atol=1e-12)

  def test_hellinger_hand_value(self):
    # Equal variances: H^2 = 1 - exp(-(mean difference)^2 / (8 sigma^2)).
    ones = jnp.ones(1)
    value = gaussian_squared_hellinger_diag(0 * ones, 2 * ones, ones, 2 * ones)
    assert np.isclose(value, 1 - np.exp(-1 / 32), rtol=1e-6)

  def test_hellinger_full_matches_reference(self, x64, rng):
    arrays = random_full_pair(rng)
    value = gaussian_squared_hellinger(*arrays)
    expected = reference_batched(reference_hellinger, *arrays)
    np.testing.assert_allclose(value, expected, rtol=1e-10)

  def test_hellinger_in_unit_interval(self, rng):
    arrays = random_full_pair(rng)
    far = (100 + arrays[0], arrays[1], arrays[2], arrays[3])
    value = gaussian_squared_hellinger(*arrays)
    far_value = gaussian_squared_hellinger(*far)
    assert np.all(value >= 0)
    assert np.all(value <= 1)
    np.testing.assert_allclose(far_value, 1.0)

  def test_hellinger_symmetric(self, x64, rng):
    p_mean, p_cov, q_mean, q_cov = random_full_pair(rng)
    forward = gaussian_squared_hellinger(p_mean, p_cov, q_mean, q_cov)
    backward = gaussian_squared_hellinger(q_mean, q_cov, p_mean, p_cov)
    np.testing.assert_allclose(forward, backward, rtol=1e-12)


class TestWasserstein2:
  def test_w2_shifted_identity_is_squared_norm(self):
    shift = jnp.array([1.0, -2.0, 0.5])
    value = gaussian_wasserstein2_squared(
      jnp.zeros(3), jnp.eye(3), shift, jnp.eye(3)
    )
    assert np.isclose(value, jnp.sum(shift**2), rtol=1e-6)

  def test_w2_diag_hand_value(self):
    value = gaussian_wasserstein2_squared_diag(
      jnp.zeros(2), jnp.array([1.0, 2.0]), jnp.ones(2), jnp.array([3.0, 2.0])
    )
    assert np.isclose(value, 2.0 + 4.0, rtol=1e-6)

  def test_w2_full_matches_scipy_sqrtm(self, x64, rng):
    arrays = random_full_pair(rng)
    value = gaussian_wasserstein2_squared(*arrays)
    expected = reference_batched(reference_w2, *arrays)
    np.testing.assert_allclose(value, expected, rtol=1e-9)

  def test_w2_symmetric(self, x64, rng):
    p_mean, p_cov, q_mean, q_cov = random_full_pair(rng)
    forward = gaussian_wasserstein2_squared(p_mean, p_cov, q_mean, q_cov)
    backward = gaussian_wasserstein2_squared(q_mean, q_cov, p_mean, p_cov)
    np.testing.assert_allclose(forward, backward, rtol=1e-10)

  def test_w2_commuting_covariances(self, x64):
    # Commuting covariances: the trace term is ||Sp^1/2 - Sq^1/2||_F^2.
    rotation = np.linalg.qr(np.arange(9.0).reshape(3, 3) + np.eye(3))[0]
    p_cov = rotation @ np.diag([1.0, 4.0, 9.0]) @ rotation.T
    q_cov = rotation @ np.diag([4.0, 4.0, 1.0]) @ rotation.T
    value = gaussian_wasserstein2_squared(
      np.zeros(3), p_cov, np.zeros(3), q_cov
    )
    assert np.isclose(value, 1.0 + 0.0 + 4.0, rtol=1e-10)

  @pytest.mark.parametrize("q_scale", [1.0, 2.0])
  def test_w2_gradient_finite_at_repeated_eigenvalues(self, q_scale):
    # Both covariances are multiples of the identity, so every eigenvalue of
    # the matrix under the square root repeats.
    def w2(p_cov, q_cov):
      return gaussian_wasserstein2_squared(
        jnp.zeros(3), p_cov, jnp.ones(3), q_cov
      )

    p_grad, q_grad = jax.jit(jax.grad(w2, argnums=(0, 1)))(
      jnp.eye(3), q_scale * jnp.eye(3)
    )
    assert np.all(np.isfinite(p_grad))
    assert np.all(np.isfinite(q_grad))
    # d/dS tr(S) - 2 tr((c S)^1/2) at S = I is (1 - sqrt(c)) I.
    np.testing.assert_allclose(
      p_grad, (1 - np.sqrt(q_scale)) * np.eye(3), atol=1e-6
    )

  def test_w2_repeated_eigenvalue_grads_match_finite_differences(self, x64):
    args = (jnp.zeros(3), jnp.eye(3), jnp.ones(3), 2.0 * jnp.eye(3))
    check_grads(gaussian_wasserstein2_squared, args, order=1, modes=("rev",))


class TestAllFunctions:
  @pytest.mark.parametrize("name", list(DIAG_FUNCTIONS))
  def test_diag_matches_full(self, x64, rng, name):
    diag = random_diag_pair(rng)
    value = DIAG_FUNCTIONS[name](*diag)
    expected = FULL_FUNCTIONS[name](*diag_to_full(*diag))
    np.testing.assert_allclose(value, expected, rtol=1e-10)

  @pytest.mark.parametrize("name", list(FULL_FUNCTIONS))
  def test_zero_at_identical(self, rng, name):
    p_mean, p_cov, _, _ = random_full_pair(rng)
    _, p_scale, _, _ = random_diag_pair(rng)
    full = FULL_FUNCTIONS[name](p_mean, p_cov, p_mean, p_cov)
    diag = DIAG_FUNCTIONS[name](p_mean, p_scale, p_mean, p_scale)
    np.testing.assert_allclose(full, 0.0, atol=1e-5)
    np.testing.assert_allclose(diag, 0.0, atol=1e-6)

  @pytest.mark.parametrize("name", list(FULL_FUNCTIONS))
  def test_nonnegative(self, rng, name):
    full = FULL_FUNCTIONS[name](*random_full_pair(rng))
    diag = DIAG_FUNCTIONS[name](*random_diag_pair(rng))
    assert np.all(full >= 0)
    assert np.all(diag >= 0)

  @pytest.mark.parametrize("name", list(FULL_FUNCTIONS))
  def test_full_gradients(self, x64, rng, name):
    args = tuple(a[0] for a in random_full_pair(rng))
    check_grads(FULL_FUNCTIONS[name], args, order=1, modes=("rev",))

  @pytest.mark.parametrize("name", list(DIAG_FUNCTIONS))
  def test_diag_gradients(self, x64, rng, name):
    args = random_diag_pair(rng, batch=(2,))
    check_grads(DIAG_FUNCTIONS[name], args, order=1, modes=("rev",))

  def test_renyi_gradients_above_one(self, x64, rng):
    args = tuple(a[0] for a in random_full_pair(rng))
    args = (args[0], 0.3 * args[1], args[2], args[3])
    renyi = lambda *a: gaussian_renyi(*a, alpha=1.5)
    check_grads(renyi, args, order=1, modes=("rev",))

  @pytest.mark.parametrize("name", list(FULL_FUNCTIONS))
  def test_jit_matches_eager(self, rng, name):
    full_args = random_full_pair(rng)
    diag_args = random_diag_pair(rng)
    full, diag = EAGER_FULL_FUNCTIONS[name], EAGER_DIAG_FUNCTIONS[name]
    np.testing.assert_allclose(
      jax.jit(full)(*full_args), full(*full_args), rtol=1e-5
    )
    np.testing.assert_allclose(
      jax.jit(diag)(*diag_args), diag(*diag_args), rtol=1e-6
    )

  @pytest.mark.parametrize("name", list(FULL_FUNCTIONS))
  def test_vmap_matches_batch(self, rng, name):
    full_args = random_full_pair(rng, batch=(3, 2))
    diag_args = random_diag_pair(rng, batch=(3, 2))
    full, diag = FULL_FUNCTIONS[name], DIAG_FUNCTIONS[name]
    np.testing.assert_allclose(
      jax.vmap(full)(*full_args), full(*full_args), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
      jax.vmap(diag)(*diag_args), diag(*diag_args), rtol=1e-6
    )

  @pytest.mark.parametrize("name", list(FULL_FUNCTIONS))
  def test_batch_axes_broadcast(self, rng, name):
    p_mean, p_cov, q_mean, q_cov = random_full_pair(rng, batch=(5,))
    value = FULL_FUNCTIONS[name](p_mean, p_cov, q_mean[0], q_cov[0])
    expected = FULL_FUNCTIONS[name](
      p_mean,
      p_cov,
      np.broadcast_to(q_mean[0], (5, 3)),
      np.broadcast_to(q_cov[0], (5, 3, 3)),
    )
    assert value.shape == (5,)
    np.testing.assert_allclose(value, expected, rtol=1e-6)

  @pytest.mark.parametrize("name", list(FULL_FUNCTIONS))
  def test_bfloat16_computed_in_float32(self, rng, name):
    full_args = [a.astype(jnp.bfloat16) for a in random_full_pair(rng)]
    diag_args = [a.astype(jnp.bfloat16) for a in random_diag_pair(rng)]
    assert FULL_FUNCTIONS[name](*full_args).dtype == jnp.float32
    assert DIAG_FUNCTIONS[name](*diag_args).dtype == jnp.float32

  @pytest.mark.parametrize("name", list(FULL_FUNCTIONS))
  def test_integer_dtype_raises(self, name):
    mean, cov = jnp.zeros(2), jnp.eye(2)
    with pytest.raises(TypeError, match="q_mean must have a floating dtype"):
      FULL_FUNCTIONS[name](mean, cov, jnp.zeros(2, jnp.int32), cov)
    with pytest.raises(TypeError, match="p_scale must have a floating dtype"):
      DIAG_FUNCTIONS[name](mean, jnp.ones(2, jnp.int32), mean, mean + 1)

  @pytest.mark.parametrize("name", list(FULL_FUNCTIONS))
  def test_shape_mismatch_raises(self, name):
    full, diag = FULL_FUNCTIONS[name], DIAG_FUNCTIONS[name]
    with pytest.raises(ValueError, match="same dim"):
      full(jnp.zeros(2), jnp.eye(2), jnp.zeros(3), jnp.eye(3))
    with pytest.raises(ValueError, match=r"p_cov shape \[\.\.\., dim, dim\]"):
      full(jnp.zeros(2), jnp.eye(3), jnp.zeros(2), jnp.eye(2))
    with pytest.raises(ValueError, match="batch axes"):
      full(jnp.zeros((2, 2)), jnp.eye(2), jnp.zeros((3, 2)), jnp.eye(2))
    with pytest.raises(ValueError, match="same dim"):
      diag(jnp.zeros(2), jnp.ones(2), jnp.zeros(3), jnp.ones(3))
    with pytest.raises(ValueError, match="broadcast"):
      diag(jnp.zeros(2), jnp.ones(3), jnp.zeros(2), jnp.ones(2))
    with pytest.raises(ValueError, match=r"\[\.\.\., dim\]"):
      diag(jnp.zeros(()), jnp.ones(()), jnp.zeros(()), jnp.ones(()))

  @pytest.mark.parametrize("alpha", [0.0, -0.5, float("inf"), float("nan")])
  def test_invalid_alpha_raises(self, alpha):
    mean, cov = jnp.zeros(2), jnp.eye(2)
    with pytest.raises(ValueError, match=f"alpha must be .* > 0, got {alpha}"):
      gaussian_renyi(mean, cov, mean, cov, alpha=alpha)
    with pytest.raises(ValueError, match=f"alpha must be .* > 0, got {alpha}"):
      gaussian_renyi_diag(mean, mean + 1, mean, mean + 1, alpha=alpha)

  def test_traced_alpha_raises(self):
    mean = jnp.zeros(2)
    renyi = jax.jit(
      lambda alpha: gaussian.gaussian_renyi_diag(
        mean, mean + 1, mean, mean + 1, alpha=alpha
      )
    )
    with pytest.raises(TypeError, match="alpha must be a concrete number"):
      renyi(0.5)
