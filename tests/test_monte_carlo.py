"""Tests of the Monte-Carlo f-divergence estimates against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.scipy.stats import norm
from jax.test_util import check_grads

from divergences import gaussian, generators
from divergences.monte_carlo import monte_carlo_f_divergence

# Jitting compiles each signature once, which makes the file much faster than
# compiling every operation eagerly.
estimate_f_divergence = jax.jit(
  monte_carlo_f_divergence,
  static_argnums=0,
  static_argnames=("sampled_from", "axis"),
)

NUM_SAMPLES = 100_000

# P = N(0, 1) and Q = N(0.5, 1.2^2). Both sides have finite second moments of
# every integrand below, because the scale ratio is below sqrt(2) both ways.
P_MEAN, P_SCALE, Q_MEAN, Q_SCALE = 0.0, 1.0, 0.5, 1.2


class PlainGenerator:
  """A duck-typed generator with only f and its limits, no log-space forms."""

  def __init__(self, name, f, f_at_zero, slope_at_infinity):
    self.name = name
    self.f = f
    self.f_at_zero = f_at_zero
    self.slope_at_infinity = slope_at_infinity


PLAIN_KL = PlainGenerator(
  "kl", lambda u: jax.scipy.special.xlogy(u, u), 0.0, np.inf
)
PLAIN_REVERSE_KL = PlainGenerator(
  "reverse_kl", lambda u: -jnp.log(u), np.inf, 0.0
)


def log_ratio_at(x):
  return norm.logpdf(x, P_MEAN, P_SCALE) - norm.logpdf(x, Q_MEAN, Q_SCALE)


@pytest.fixture(scope="module")
def samples():
  """Seeded samples from P and from Q, shape [NUM_SAMPLES] each."""
  key_p, key_q = jax.random.split(jax.random.key(0))
  from_p = P_MEAN + P_SCALE * jax.random.normal(key_p, (NUM_SAMPLES,))
  from_q = Q_MEAN + Q_SCALE * jax.random.normal(key_q, (NUM_SAMPLES,))
  return {"p": from_p, "q": from_q}


def closed_form(name):
  """D(P||Q) for the 1-D Gaussians P and Q, from the gaussian module."""
  args = [jnp.array([v]) for v in (P_MEAN, P_SCALE, Q_MEAN, Q_SCALE)]
  if name == "kl":
    return gaussian.gaussian_kl_diag(*args)
  if name == "reverse_kl":
    return gaussian.gaussian_kl_diag(*args[2:], *args[:2])
  if name == "squared_hellinger":
    return gaussian.gaussian_squared_hellinger_diag(*args)
  raise ValueError(f"no closed form for {name!r}")


def standard_error(values):
  values = np.asarray(values, np.float64)
  return values.std() / np.sqrt(values.size)


def integrand(name, log_ratio, sampled_from):
  """The per-sample term in float64 NumPy, for standard errors."""
  ratio = np.exp(np.asarray(log_ratio, np.float64))
  f = {
    "kl": lambda u: u * np.log(u),
    "reverse_kl": lambda u: -np.log(u),
    "squared_hellinger": lambda u: 0.5 * (np.sqrt(u) - 1) ** 2,
  }[name]
  return f(ratio) if sampled_from == "q" else f(ratio) / ratio


class TestAgainstClosedForms:
  @pytest.mark.parametrize("sampled_from", ["q", "p"])
  @pytest.mark.parametrize("name", ["kl", "reverse_kl", "squared_hellinger"])
  def test_estimate_within_standard_errors(self, samples, name, sampled_from):
    log_ratio = log_ratio_at(samples[sampled_from])
    estimate = estimate_f_divergence(name, log_ratio, sampled_from=sampled_from)
    error = standard_error(integrand(name, log_ratio, sampled_from))
    assert abs(estimate - closed_form(name)) < 4 * error

  @pytest.mark.parametrize("name", ["kl", "reverse_kl", "squared_hellinger"])
  def test_sampled_from_p_and_q_agree(self, samples, name):
    from_q = estimate_f_divergence(name, log_ratio_at(samples["q"]))
    from_p = estimate_f_divergence(
      name, log_ratio_at(samples["p"]), sampled_from="p"
    )
    error_q = standard_error(integrand(name, log_ratio_at(samples["q"]), "q"))
    error_p = standard_error(integrand(name, log_ratio_at(samples["p"]), "p"))
    assert abs(from_q - from_p) < 4 * np.hypot(error_q, error_p)

  def test_kl_matches_scipy_sampling_in_float64(self, rng):
    with jax.enable_x64(True):
      p = scipy.stats.norm(P_MEAN, P_SCALE)
      q = scipy.stats.norm(Q_MEAN, Q_SCALE)
      x = p.rvs(size=NUM_SAMPLES, random_state=rng)
      log_ratio = p.logpdf(x) - q.logpdf(x)
      estimate = estimate_f_divergence("kl", log_ratio, sampled_from="p")
      assert estimate.dtype == jnp.float64
      assert np.isclose(estimate, log_ratio.mean(), rtol=1e-12)


class TestImportanceWeights:
  def test_proposal_equal_to_target_gives_plain_mean(self, samples):
    log_ratio = log_ratio_at(samples["q"])
    plain = estimate_f_divergence("kl", log_ratio)
    # log q - log proposal is a constant when the proposal is Q.
    weighted = estimate_f_divergence(
      "kl", log_ratio, log_weights=jnp.full_like(log_ratio, 3.0)
    )
    np.testing.assert_allclose(weighted, plain, rtol=1e-5)

  @pytest.mark.parametrize("sampled_from", ["q", "p"])
  def test_wide_proposal_estimate(self, sampled_from):
    # Samples from R = N(0.2, 1.5^2) reweighted to the side named by
    # sampled_from.
    x = 0.2 + 1.5 * jax.random.normal(jax.random.key(1), (NUM_SAMPLES,))
    log_proposal = norm.logpdf(x, 0.2, 1.5)
    if sampled_from == "q":
      log_target = norm.logpdf(x, Q_MEAN, Q_SCALE)
    else:
      log_target = norm.logpdf(x, P_MEAN, P_SCALE)
    log_weights = log_target - log_proposal
    estimate = estimate_f_divergence(
      "kl",
      log_ratio_at(x),
      sampled_from=sampled_from,
      log_weights=log_weights,
    )

    weights = np.exp(np.asarray(log_weights, np.float64))
    weighted_terms = weights * integrand("kl", log_ratio_at(x), sampled_from)
    error = standard_error(weighted_terms)
    assert abs(estimate - closed_form("kl")) < 5 * error

  def test_weights_are_normalised(self):
    log_ratio = jnp.array([0.0, 1.0, 2.0])
    log_weights = jnp.log(jnp.array([1.0, 2.0, 1.0]))
    estimate = estimate_f_divergence(
      "kl", log_ratio, sampled_from="p", log_weights=log_weights
    )
    # For KL from P samples the term is log r.
    assert np.isclose(estimate, (0.0 + 2.0 + 2.0) / 4.0, rtol=1e-6)

  def test_zero_weight_drops_non_finite_term(self):
    log_ratio = jnp.array([jnp.inf, 1.0])
    log_weights = jnp.array([-jnp.inf, 0.0])
    estimate = estimate_f_divergence("kl", log_ratio, log_weights=log_weights)
    assert np.isclose(estimate, np.e, rtol=1e-6)


class TestMaskAndAxis:
  def test_mask_matches_subset(self, rng):
    log_ratio = rng.normal(size=(3, 20)).astype(np.float32)
    mask = rng.uniform(size=(3, 20)) < 0.6
    estimate = estimate_f_divergence("js", log_ratio, where=mask)
    # Jensen-Shannon generator with beta = 1/2, in float64 NumPy.
    ratio = np.exp(log_ratio.astype(np.float64))
    terms = 0.5 * (
      ratio * np.log(2 * ratio / (ratio + 1)) + np.log(2 / (ratio + 1))
    )
    for row in range(3):
      expected = terms[row][mask[row]].mean()
      np.testing.assert_allclose(estimate[row], expected, rtol=1e-5)

  def test_mask_matches_subset_with_weights(self, rng):
    log_ratio = rng.normal(size=(20,)).astype(np.float32)
    log_weights = rng.normal(size=(20,)).astype(np.float32)
    mask = rng.uniform(size=(20,)) < 0.6
    estimate = estimate_f_divergence(
      "pearson_chi2", log_ratio, log_weights=log_weights, where=mask
    )
    expected = estimate_f_divergence(
      "pearson_chi2", log_ratio[mask], log_weights=log_weights[mask]
    )
    np.testing.assert_allclose(estimate, expected, rtol=1e-6)

  def test_fully_masked_row_is_zero(self):
    log_ratio = jnp.array([[jnp.nan, jnp.inf], [0.5, 1.0]])
    mask = jnp.array([[False, False], [True, True]])
    plain = estimate_f_divergence("kl", log_ratio, where=mask)
    weighted = estimate_f_divergence(
      "kl", log_ratio, where=mask, log_weights=jnp.zeros((2, 2))
    )
    assert plain[0] == 0.0
    assert weighted[0] == 0.0
    assert np.isfinite(plain[1])

  def test_masked_gradients_are_zero_and_finite(self):
    log_ratio = jnp.array([jnp.inf, 0.5, -1.0])
    mask = jnp.array([False, True, True])

    def estimate(log_ratio, log_weights):
      return estimate_f_divergence(
        "kl", log_ratio, where=mask, log_weights=log_weights
      )

    grads = jax.grad(estimate, argnums=(0, 1))(log_ratio, jnp.zeros(3))
    for grad in grads:
      assert np.all(np.isfinite(grad))
      assert grad[0] == 0.0

  def test_axis_matches_transpose(self, rng):
    log_ratio = rng.normal(size=(5, 4)).astype(np.float32)
    along_first = estimate_f_divergence("kl", log_ratio, axis=0)
    along_last = estimate_f_divergence("kl", log_ratio.T, axis=-1)
    np.testing.assert_allclose(along_first, along_last, rtol=1e-6)

  def test_tuple_axis_reduces_all(self, rng):
    log_ratio = rng.normal(size=(2, 3, 4)).astype(np.float32)
    estimate = estimate_f_divergence("kl", log_ratio, axis=(0, 2))
    expected = estimate_f_divergence(
      "kl", np.moveaxis(log_ratio, 1, 0).reshape(3, 8)
    )
    assert estimate.shape == (3,)
    np.testing.assert_allclose(estimate, expected, rtol=1e-6)


class TestGenerators:
  @pytest.mark.parametrize("sampled_from", ["q", "p"])
  def test_duck_typed_generator_matches_registry(self, rng, sampled_from):
    log_ratio = rng.normal(size=(50,)).astype(np.float32)
    for plain in (PLAIN_KL, PLAIN_REVERSE_KL):
      value = estimate_f_divergence(plain, log_ratio, sampled_from=sampled_from)
      expected = estimate_f_divergence(
        plain.name, log_ratio, sampled_from=sampled_from
      )
      np.testing.assert_allclose(value, expected, rtol=1e-5)

  def test_generator_object_matches_name(self, rng):
    log_ratio = rng.normal(size=(50,)).astype(np.float32)
    value = estimate_f_divergence(generators.get("js", beta=0.3), log_ratio)
    by_hand = estimate_f_divergence(
      generators.custom_generator(generators.get("js", beta=0.3).f),
      log_ratio,
    )
    np.testing.assert_allclose(value, by_hand, rtol=1e-5)

  @pytest.mark.parametrize("name", ["kl", "reverse_kl", "js", "jeffreys"])
  def test_sampled_from_p_term_is_f_over_ratio(self, rng, name):
    log_ratio = rng.normal(scale=3.0, size=(40,))
    with jax.enable_x64(True):
      generator = generators.get(name)
      ratio = np.exp(log_ratio)
      expected = np.mean(np.asarray(generator.f(ratio)) / ratio)
      value = estimate_f_divergence(name, log_ratio, sampled_from="p")
      np.testing.assert_allclose(value, expected, rtol=1e-10)


class TestStability:
  def test_kl_from_p_large_log_ratio_is_exact(self):
    # exp(1000) overflows, but the KL term on P samples is log r itself.
    estimate = estimate_f_divergence(
      "kl", jnp.array([1000.0, -1000.0]), sampled_from="p"
    )
    assert estimate == 0.0

  def test_limits_at_infinite_log_ratio(self):
    kl_zero_p = estimate_f_divergence("kl", jnp.array([-jnp.inf, 0.0]))
    kl_zero_q = estimate_f_divergence(
      "kl", jnp.array([jnp.inf, 0.0]), sampled_from="p"
    )
    tv_zero_q = estimate_f_divergence(
      "total_variation", jnp.array([jnp.inf, 0.0]), sampled_from="p"
    )
    reverse_zero_p = estimate_f_divergence(
      "reverse_kl", jnp.array([-jnp.inf, 0.0])
    )
    assert kl_zero_p == 0.0
    assert kl_zero_q == jnp.inf
    assert np.isclose(tv_zero_q, 0.25)
    assert reverse_zero_p == jnp.inf

  def test_impossible_sample_is_nan(self):
    from_q = estimate_f_divergence("kl", jnp.array([jnp.inf, 0.0]))
    from_p = estimate_f_divergence(
      "kl", jnp.array([-jnp.inf, 0.0]), sampled_from="p"
    )
    assert np.isnan(from_q)
    assert np.isnan(from_p)

  def test_gradients_finite_with_infinite_entries(self):
    grad = jax.grad(lambda x: estimate_f_divergence("kl", x, sampled_from="p"))(
      jnp.array([jnp.inf, 0.5])
    )
    assert np.all(np.isfinite(grad))


class TestTransformations:
  def test_check_grads(self, rng):
    with jax.enable_x64(True):
      log_ratio = rng.normal(size=(6,))
      log_weights = rng.normal(size=(6,))
      for sampled_from in ("q", "p"):
        estimate = lambda x, w, s=sampled_from: estimate_f_divergence(
          "js", x, sampled_from=s, log_weights=w
        )
        check_grads(estimate, (log_ratio, log_weights), order=1, modes=("rev",))

  def test_jit_matches_eager(self, rng):
    log_ratio = rng.normal(size=(4, 30)).astype(np.float32)
    mask = rng.uniform(size=(4, 30)) < 0.8
    estimate = lambda x, m: monte_carlo_f_divergence(
      "squared_hellinger", x, sampled_from="p", where=m
    )
    np.testing.assert_allclose(
      jax.jit(estimate)(log_ratio, mask), estimate(log_ratio, mask), rtol=1e-6
    )

  def test_vmap_matches_batch(self, rng):
    log_ratio = rng.normal(size=(4, 30)).astype(np.float32)
    estimate = lambda x: monte_carlo_f_divergence("kl", x)
    np.testing.assert_allclose(
      jax.vmap(estimate)(log_ratio), estimate(log_ratio), rtol=1e-6
    )

  def test_bfloat16_computed_in_float32(self):
    log_ratio = jnp.array([0.1, -0.2, 0.3], jnp.bfloat16)
    assert estimate_f_divergence("kl", log_ratio).dtype == jnp.float32


class TestErrors:
  def test_invalid_sampled_from_raises(self):
    with pytest.raises(
      ValueError, match="sampled_from must be 'q' or 'p', got 'P'"
    ):
      estimate_f_divergence("kl", jnp.zeros(3), sampled_from="P")

  def test_unknown_name_raises(self):
    with pytest.raises(ValueError, match="unknown divergence 'kll'"):
      estimate_f_divergence("kll", jnp.zeros(3))

  def test_non_generator_raises(self):
    with pytest.raises(TypeError, match="registry name or a generator"):
      estimate_f_divergence(3.0, jnp.zeros(3))

  def test_integer_log_ratio_raises(self):
    with pytest.raises(TypeError, match="log_ratio must have a floating dtype"):
      estimate_f_divergence("kl", jnp.zeros(3, jnp.int32))

  def test_axis_out_of_range_raises(self):
    with pytest.raises(ValueError, match="axis 2 is out of range"):
      estimate_f_divergence("kl", jnp.zeros((2, 3)), axis=2)

  def test_shape_mismatch_raises(self):
    with pytest.raises(ValueError, match="do not broadcast"):
      estimate_f_divergence(
        "kl", jnp.zeros((2, 3)), log_weights=jnp.zeros((2, 4))
      )
