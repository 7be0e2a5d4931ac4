"""Tests of the generator objects: derivatives, conjugates, limits, registry."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divergences as dv
from divergences import generators

GENERATORS = [
  ("kl", {}),
  ("reverse_kl", {}),
  ("js", {}),
  ("js", {"beta": 0.2}),
  ("total_variation", {}),
  ("squared_hellinger", {}),
  ("pearson_chi2", {}),
  ("neyman_chi2", {}),
  ("jeffreys", {}),
  ("softened_reverse_kl", {}),
  ("alpha", {"alpha": -0.5}),
  ("alpha", {"alpha": 0.0}),
  ("alpha", {"alpha": 0.4}),
  ("alpha", {"alpha": 1.0}),
  ("alpha", {"alpha": 2.5}),
]
IDS = [f"{name}{params or ''}" for name, params in GENERATORS]
# Ratios away from the kink of total variation at u = 1.
RATIOS = jnp.array([0.05, 0.3, 0.7, 1.6, 4.0, 20.0])


def scalar_grad(fn):
  return jax.vmap(jax.grad(fn))


@pytest.mark.parametrize("name, params", GENERATORS, ids=IDS)
class TestGenerator:
  def test_f_of_one_is_zero(self, name, params):
    gen = dv.get(name, **params)
    assert float(gen.f(jnp.float32(1.0))) == pytest.approx(0.0, abs=1e-7)

  def test_f_is_convex(self, name, params):
    gen = dv.get(name, **params)
    u = jnp.linspace(0.05, 20.0, 400)
    second_difference = np.diff(np.asarray(gen.f(u)), 2)
    assert np.all(second_difference >= -1e-5)

  def test_derivatives_match_autodiff(self, name, params):
    gen = dv.get(name, **params)
    np.testing.assert_allclose(
      gen.f_prime(RATIOS), scalar_grad(gen.f)(RATIOS), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
      gen.f_double_prime(RATIOS),
      jax.vmap(jax.grad(jax.grad(gen.f)))(RATIOS),
      rtol=1e-3,
      atol=1e-5,
    )

  def test_score_weight_is_r_squared_f_double_prime(self, name, params):
    gen = dv.get(name, **params)
    np.testing.assert_allclose(
      gen.score_weight(RATIOS),
      RATIOS**2 * gen.f_double_prime(RATIOS),
      rtol=1e-5,
      atol=1e-7,
    )

  def test_f_of_log_ratio_matches_f(self, name, params):
    gen = dv.get(name, **params)
    np.testing.assert_allclose(
      gen.f_of_log_ratio(jnp.log(RATIOS)), gen.f(RATIOS), rtol=1e-5, atol=1e-6
    )

  def test_terms_match_q_f_of_ratio(self, name, params):
    gen = dv.get(name, **params)
    log_p = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
    log_q = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1]))
    expected = jnp.exp(log_q) * gen.f(jnp.exp(log_p - log_q))
    np.testing.assert_allclose(
      gen.terms(log_p, log_q), expected, rtol=1e-5, atol=1e-7
    )

  def test_limits_match_f(self, name, params):
    gen = dv.get(name, **params)
    with jax.enable_x64(True):
      near_zero = float(gen.f(jnp.float64(1e-12)))
      far = float(gen.f(jnp.float64(1e12))) / 1e12
    if math.isinf(gen.f_at_zero):
      assert near_zero > 20.0
    else:
      assert near_zero == pytest.approx(gen.f_at_zero, abs=1e-3)
    if math.isinf(gen.slope_at_infinity):
      assert far > 20.0
    else:
      assert far == pytest.approx(gen.slope_at_infinity, abs=1e-3)

  def test_conjugate_matches_numerical_supremum(self, name, params):
    gen = dv.get(name, **params)
    t = gen.f_prime(RATIOS)  # interior points of the domain of f*
    numerical = generators.numerical_conjugate(
      gen.f, gen.f_prime, t, slope_at_infinity=gen.slope_at_infinity
    )
    np.testing.assert_allclose(
      gen.conjugate(t), numerical, rtol=1e-3, atol=1e-4
    )

  def test_fenchel_young_equality_at_f_prime(self, name, params):
    # f*(f'(u)) = u f'(u) - f(u)
    gen = dv.get(name, **params)
    t = gen.f_prime(RATIOS)
    expected = RATIOS * t - gen.f(RATIOS)
    np.testing.assert_allclose(gen.conjugate(t), expected, rtol=1e-3, atol=1e-4)

  def test_fenchel_young_inequality(self, name, params):
    gen = dv.get(name, **params)
    t = gen.activation(jnp.linspace(-4.0, 4.0, 9))
    for u in RATIOS:
      gap = gen.conjugate(t) - (u * t - gen.f(u))
      assert np.all(np.asarray(gap) >= -1e-4)

  def test_activation_maps_into_conjugate_domain(self, name, params):
    gen = dv.get(name, **params)
    # float32 rounds slope - softplus(-v) onto the boundary beyond v ~ 15.
    t = gen.activation(jnp.linspace(-10.0, 10.0, 41))
    assert np.all(np.isfinite(np.asarray(gen.conjugate(t))))

  def test_get_is_cached_for_jit(self, name, params):
    assert dv.get(name, **params) is dv.get(name, **params)


def test_js_generator_sums_to_js_divergence():
  # JSD(0.5) of P = [1/2, 1/2], Q = [1/4, 3/4] from sum_i q_i f(p_i / q_i).
  gen = dv.get("js")
  p, q = jnp.array([0.5, 0.5]), jnp.array([0.25, 0.75])
  value = float(jnp.sum(q * gen.f(p / q)))
  assert value == pytest.approx(0.033822075568605, rel=1e-5)


def test_f_prime_values_used_by_f_dpo():
  u = jnp.float32(2.0)
  assert float(dv.get("reverse_kl").f_prime(u)) == pytest.approx(-0.5)
  assert float(dv.get("kl").f_prime(u)) == pytest.approx(math.log(2.0) + 1)
  # beta log(u / (beta u + 1 - beta)) at beta = 1/2: 1/2 log(4/3)
  assert float(dv.get("js").f_prime(u)) == pytest.approx(
    0.5 * math.log(4.0 / 3.0), rel=1e-6
  )


class TestRegistry:
  def test_names(self):
    assert set(dv.NAMES) == {
      "kl",
      "reverse_kl",
      "js",
      "total_variation",
      "squared_hellinger",
      "pearson_chi2",
      "neyman_chi2",
      "jeffreys",
      "softened_reverse_kl",
      "alpha",
    }

  def test_unknown_name_lists_valid_names(self):
    with pytest.raises(ValueError, match="unknown divergence 'kld'.*kl, "):
      dv.get("kld")

  def test_unknown_parameter(self):
    with pytest.raises(ValueError, match=r"'kl' takes parameters \[\]"):
      dv.get("kl", beta=0.5)

  def test_alpha_requires_alpha(self):
    with pytest.raises(ValueError, match="requires"):
      dv.get("alpha")

  @pytest.mark.parametrize("beta", [-0.01, 1.01])
  def test_beta_domain(self, beta):
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
      dv.get("js", beta=beta)

  def test_alpha_domain(self):
    with pytest.raises(ValueError, match="alpha must be a finite"):
      dv.get("alpha", alpha=math.nan)

  def test_parameter_must_be_a_number(self):
    with pytest.raises(TypeError, match="beta must be a Python float"):
      dv.get("js", beta=jnp.array(0.5))

  def test_built_generator_rejects_parameters(self):
    with pytest.raises(ValueError, match="already built"):
      dv.f_divergence(dv.get("js"), jnp.zeros(2), jnp.zeros(2), beta=0.3)


class TestCustomGenerator:
  def test_kl_from_plain_f(self):
    gen = dv.custom_generator(lambda u: u * jnp.log(u))
    assert gen.f_at_zero == pytest.approx(0.0, abs=1e-20)
    assert gen.slope_at_infinity == math.inf
    np.testing.assert_allclose(
      gen.f_prime(RATIOS), jnp.log(RATIOS) + 1, rtol=1e-5
    )
    np.testing.assert_allclose(gen.score_weight(RATIOS), RATIOS, rtol=1e-5)
    np.testing.assert_allclose(
      gen.conjugate(jnp.array([-1.0, 0.0, 1.0])),
      jnp.exp(jnp.array([-1.0, 0.0, 1.0]) - 1.0),
      rtol=1e-4,
    )

  def test_matches_named_divergence(self, rng):
    gen = dv.custom_generator(lambda u: jnp.square(jnp.sqrt(u) - 1.0) / 2)
    p = rng.standard_normal((4, 5)).astype(np.float32)
    q = rng.standard_normal((4, 5)).astype(np.float32)
    p[0, 1] = -np.inf
    np.testing.assert_allclose(
      dv.f_divergence(gen, p, q), dv.squared_hellinger(p, q), rtol=1e-5
    )

  def test_rejects_f_with_nonzero_f_of_one(self):
    with pytest.raises(ValueError, match=r"f\(1\) = 0, got f\(1\) = 1"):
      dv.custom_generator(lambda u: u * u)

  def test_explicit_limits_are_kept(self):
    gen = dv.custom_generator(
      lambda u: -jnp.log(u), f_at_zero=math.inf, slope_at_infinity=0.0
    )
    assert gen.f_at_zero == math.inf
    assert gen.slope_at_infinity == 0.0
