"""Tests of the categorical divergences against float64 references."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

import divergences as dv
from tests import reference as ref

# (id, library function, float64 reference on probabilities)
DIVERGENCES = [
  ("kl", dv.kl_divergence, ref.kl),
  ("js", dv.js_divergence, ref.js),
  (
    "js_beta_0.1",
    functools.partial(dv.js_divergence, beta=0.1),
    functools.partial(ref.js, beta=0.1),
  ),
  (
    "js_beta_0.9",
    functools.partial(dv.js_divergence, beta=0.9),
    functools.partial(ref.js, beta=0.9),
  ),
  ("total_variation", dv.total_variation, ref.total_variation),
  ("squared_hellinger", dv.squared_hellinger, ref.squared_hellinger),
  ("chi2", dv.chi2_divergence, ref.pearson_chi2),
  (
    "alpha_-0.5",
    functools.partial(dv.alpha_divergence, alpha=-0.5),
    functools.partial(ref.alpha_divergence, a=-0.5),
  ),
  (
    "alpha_0",
    functools.partial(dv.alpha_divergence, alpha=0.0),
    functools.partial(ref.alpha_divergence, a=0.0),
  ),
  (
    "alpha_0.3",
    functools.partial(dv.alpha_divergence, alpha=0.3),
    functools.partial(ref.alpha_divergence, a=0.3),
  ),
  (
    "alpha_1",
    functools.partial(dv.alpha_divergence, alpha=1.0),
    functools.partial(ref.alpha_divergence, a=1.0),
  ),
  (
    "alpha_2",
    functools.partial(dv.alpha_divergence, alpha=2.0),
    functools.partial(ref.alpha_divergence, a=2.0),
  ),
  (
    "renyi_0.5",
    functools.partial(dv.renyi_divergence, alpha=0.5),
    functools.partial(ref.renyi, a=0.5),
  ),
  (
    "renyi_1",
    functools.partial(dv.renyi_divergence, alpha=1.0),
    functools.partial(ref.renyi, a=1.0),
  ),
  (
    "renyi_2",
    functools.partial(dv.renyi_divergence, alpha=2.0),
    functools.partial(ref.renyi, a=2.0),
  ),
  ("cauchy_schwarz", dv.cauchy_schwarz_divergence, ref.cauchy_schwarz),
  ("jeffreys", dv.jeffreys_divergence, ref.jeffreys),
  ("symmetric_ce", dv.symmetric_cross_entropy, ref.symmetric_cross_entropy),
]
# Tests call the jitted functions, compiled once per shape; the eager path
# is covered by test_jit_matches_eager and the error tests.
EAGER = {name: fn for name, fn, _ in DIVERGENCES}
DIVERGENCES = [
  (name, jax.jit(fn, static_argnames="axis"), reference)
  for name, fn, reference in DIVERGENCES
]
IDS = [d[0] for d in DIVERGENCES]
# Functions that are divergences: zero at P = Q.
TRUE_DIVERGENCES = [d for d in DIVERGENCES if d[0] != "symmetric_ce"]
RTOL, ATOL = 2e-4, 2e-5


def random_logits(rng, shape, *, scale=3.0, inf_fraction=0.0):
  """Random logits with about ``inf_fraction`` of -inf, never a whole row."""
  logits = scale * rng.standard_normal(shape)
  if inf_fraction:
    drop = rng.random(shape) < inf_fraction
    drop[..., 0] = False
    logits = np.where(drop, -np.inf, logits)
  return logits.astype(np.float32)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
  np.testing.assert_allclose(
    np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol
  )


@pytest.mark.parametrize("name, fn, reference", DIVERGENCES, ids=IDS)
class TestAgainstReference:
  def test_random_logits(self, name, fn, reference, rng):
    p, q = random_logits(rng, (6, 9)), random_logits(rng, (6, 9))
    assert_close(fn(p, q), reference(ref.log_probs(p), ref.log_probs(q)))

  def test_zero_probabilities_on_both_sides(self, name, fn, reference, rng):
    p = random_logits(rng, (16, 5), inf_fraction=0.4)
    q = random_logits(rng, (16, 5), inf_fraction=0.4)
    assert_close(fn(p, q), reference(ref.log_probs(p), ref.log_probs(q)))

  def test_temperature(self, name, fn, reference, rng):
    p, q = random_logits(rng, (4, 6)), random_logits(rng, (4, 6))
    for temperature in (0.5, 4.0):
      expected = reference(
        ref.log_probs(p, temperature), ref.log_probs(q, temperature)
      )
      assert_close(fn(p, q, temperature=temperature), expected)

  def test_float64_inputs(self, name, fn, reference, rng):
    p, q = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    with jax.enable_x64(True):
      value = fn(jnp.asarray(p), jnp.asarray(q))
      assert value.dtype == jnp.float64
      assert_close(
        value, reference(ref.log_probs(p), ref.log_probs(q)), 1e-10, 1e-12
      )

  def test_bfloat16_inputs_compute_in_float32(self, name, fn, reference, rng):
    p = random_logits(rng, (3, 5)).astype(jnp.bfloat16)
    q = random_logits(rng, (3, 5)).astype(jnp.bfloat16)
    value = fn(p, q)
    assert value.dtype == jnp.float32
    expected = reference(
      ref.log_probs(np.asarray(p, np.float64)),
      ref.log_probs(np.asarray(q, np.float64)),
    )
    assert_close(value, expected)

  def test_jit_matches_eager(self, name, fn, reference, rng):
    p, q = random_logits(rng, (4, 6)), random_logits(rng, (4, 6))
    eager = EAGER[name](p, q)
    assert_close(fn(p, q), np.asarray(eager), 1e-6, 1e-7)

  def test_vmap_matches_batch(self, name, fn, reference, rng):
    p, q = random_logits(rng, (3, 4, 6)), random_logits(rng, (3, 4, 6))
    assert_close(jax.vmap(fn)(p, q), np.asarray(fn(p, q)), 1e-6, 1e-7)

  def test_axis_matches_transpose(self, name, fn, reference, rng):
    p, q = random_logits(rng, (4, 6, 3)), random_logits(rng, (4, 6, 3))
    moved = fn(np.moveaxis(p, 1, -1), np.moveaxis(q, 1, -1))
    assert_close(fn(p, q, axis=1), np.asarray(moved), 1e-6, 1e-7)
    assert_close(fn(p, q, axis=-2), np.asarray(moved), 1e-6, 1e-7)

  def test_where_matches_selection(self, name, fn, reference, rng):
    p, q = random_logits(rng, (5, 6)), random_logits(rng, (5, 6))
    where = np.array([True, False, True, True, False])
    value = np.asarray(fn(p, q, where=where))
    assert np.all(value[~where] == 0.0)
    assert_close(value[where], np.asarray(fn(p[where], q[where])), 1e-6, 1e-7)

  def test_masked_rows_have_zero_gradient(self, name, fn, reference, rng):
    p, q = random_logits(rng, (3, 4)), random_logits(rng, (3, 4))
    p[1] = np.nan  # garbage in a masked row must not leak
    where = np.array([True, False, True])
    grads = jax.grad(lambda a, b: fn(a, b, where=where).sum(), (0, 1))(p, q)
    for grad in grads:
      assert np.all(np.isfinite(grad))
      assert np.all(np.asarray(grad)[1] == 0.0)

  def test_check_grads_float64(self, name, fn, reference, rng):
    p, q = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    with jax.enable_x64(True):
      check_grads(
        lambda a, b: fn(a, b, temperature=1.5),
        (jnp.asarray(p), jnp.asarray(q)),
        order=1,
        modes=["rev", "fwd"],
        atol=1e-5,
        rtol=1e-5,
      )


def finite_gradients(fn, p, q, **kwargs):
  grads = jax.grad(lambda a, b: fn(a, b, **kwargs).sum(), (0, 1))(p, q)
  return all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


@pytest.mark.parametrize("name, fn, reference", DIVERGENCES, ids=IDS)
class TestEdgeGradients:
  def test_rows_all_negative_infinity_but_one(self, name, fn, reference):
    p = np.array([[0.0, -np.inf, -np.inf], [1.0, 2.0, 0.5]], np.float32)
    q = np.array([[0.3, 0.1, -0.2], [-np.inf, 2.0, -np.inf]], np.float32)
    value = np.asarray(fn(p, q))
    expected = reference(ref.log_probs(p), ref.log_probs(q))
    assert_close(value, expected)
    if np.all(np.isfinite(value)):
      assert finite_gradients(fn, p, q)

  def test_logits_of_size_1e4(self, name, fn, reference):
    p = np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]], np.float32)
    q = np.array([[0.0, 1e4, 0.0], [0.0, 1e4, 1e4]], np.float32)
    value = np.asarray(fn(p, q))
    assert_close(value, reference(ref.log_probs(p), ref.log_probs(q)))
    if np.all(np.isfinite(value)):
      assert finite_gradients(fn, p, q)

  def test_temperature_0_05(self, name, fn, reference, rng):
    p, q = random_logits(rng, (3, 5)), random_logits(rng, (3, 5))
    value = np.asarray(fn(p, q, temperature=0.05))
    expected = reference(ref.log_probs(p, 0.05), ref.log_probs(q, 0.05))
    assert_close(value, expected)
    if np.all(np.isfinite(value)):
      assert finite_gradients(fn, p, q, temperature=0.05)

  def test_masked_row_of_negative_infinity(self, name, fn, reference):
    p = np.array([[-np.inf, -np.inf], [0.0, 1.0]], np.float32)
    q = np.array([[-np.inf, -np.inf], [1.0, 0.0]], np.float32)
    where = np.array([False, True])
    assert float(fn(p, q, where=where)[0]) == 0.0
    assert finite_gradients(fn, p, q, where=where)


@pytest.mark.parametrize("name, fn, reference", TRUE_DIVERGENCES, ids=IDS[:-1])
class TestIdenticalInputs:
  def test_identical_float32_is_exactly_zero(self, name, fn, reference, rng):
    p = random_logits(rng, (4, 7), scale=20.0, inf_fraction=0.2)
    assert np.all(np.asarray(fn(p, p)) == 0.0)

  def test_identical_bfloat16_is_exactly_zero(self, name, fn, reference):
    p = jnp.array([[60.0, 0.0, -60.0, 30.0]], jnp.bfloat16)
    assert float(fn(p, p)[0]) == 0.0


def test_hand_computed_values():
  # P = [1/2, 1/2], Q = [1/4, 3/4].
  p = jnp.log(jnp.array([0.5, 0.5]))
  q = jnp.log(jnp.array([0.25, 0.75]))
  half_log_4_3 = 0.5 * math.log(4.0 / 3.0)  # 1/2 ln 2 + 1/2 ln(2/3)
  assert float(dv.kl_divergence(p, q)) == pytest.approx(half_log_4_3, 1e-6)
  assert float(dv.total_variation(p, q)) == pytest.approx(0.25, 1e-6)
  # 1 - (sqrt(1/8) + sqrt(3/8))
  hellinger = 1.0 - math.sqrt(0.125) - math.sqrt(0.375)
  assert float(dv.squared_hellinger(p, q)) == pytest.approx(hellinger, 1e-5)
  # (1/4)^2 / (1/4) + (1/4)^2 / (3/4) = 1/4 + 1/12
  assert float(dv.chi2_divergence(p, q)) == pytest.approx(1.0 / 3.0, 1e-6)
  # sum pq = 1/2, sum p^2 = 1/2, sum q^2 = 5/8: -log(1/4 / (5/16))
  assert float(dv.cauchy_schwarz_divergence(p, q)) == pytest.approx(
    -math.log(0.8), 1e-5
  )
  # order 2: log sum p^2 / q = log(1 + 1/3)
  assert float(dv.renyi_divergence(p, q, alpha=2.0)) == pytest.approx(
    math.log(4.0 / 3.0), 1e-6
  )
  # alpha = 1/2 is four times the squared Hellinger distance.
  assert float(dv.alpha_divergence(p, q, alpha=0.5)) == pytest.approx(
    4.0 * hellinger, 1e-4
  )
  # KL(Q||P) = 1/4 ln(1/2) + 3/4 ln(3/2)
  reverse = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
  assert float(dv.jeffreys_divergence(p, q)) == pytest.approx(
    half_log_4_3 + reverse, 1e-6
  )
  # -1/2 (1/2 ln 1/4 + 1/2 ln 3/4 + ln 1/2)
  sce = -0.5 * (0.5 * math.log(0.25) + 0.5 * math.log(0.75) + math.log(0.5))
  assert float(dv.symmetric_cross_entropy(p, q)) == pytest.approx(sce, 1e-6)
  # M = [3/8, 5/8]
  js = 0.5 * (0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625))
  js += 0.5 * (0.25 * math.log(0.25 / 0.375) + 0.75 * math.log(0.75 / 0.625))
  assert float(dv.js_divergence(p, q)) == pytest.approx(js, 1e-5)


def test_zero_support_limits():
  p = jnp.array([0.0, -jnp.inf])
  q = jnp.array([-jnp.inf, 0.0])
  assert float(dv.kl_divergence(p, q)) == math.inf
  assert float(dv.js_divergence(p, q)) == pytest.approx(math.log(2.0), 1e-6)
  assert float(dv.total_variation(p, q)) == pytest.approx(1.0, 1e-6)
  assert float(dv.squared_hellinger(p, q)) == pytest.approx(1.0, 1e-6)
  assert float(dv.cauchy_schwarz_divergence(p, q)) == math.inf
  # Binary entropy of beta for disjoint supports.
  beta = 0.2
  entropy = -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)
  assert float(dv.js_divergence(p, q, beta=beta)) == pytest.approx(
    entropy, 1e-6
  )


def test_js_beta_endpoints_are_zero_and_continuous(rng):
  p, q = random_logits(rng, (3, 5)), random_logits(rng, (3, 5))
  for beta in (0.0, 1.0):
    assert np.all(np.asarray(dv.js_divergence(p, q, beta=beta)) == 0.0)
  # JSD(beta) / beta -> KL(P||Q) and JSD(1 - beta) / beta -> KL(Q||P);
  # float64 keeps the small values resolved.
  small = 1e-6
  with jax.enable_x64(True):
    p, q = jnp.asarray(p, jnp.float64), jnp.asarray(q, jnp.float64)
    near_zero = dv.js_divergence(p, q, beta=small) / small
    near_one = dv.js_divergence(p, q, beta=1 - small) / small
    np.testing.assert_allclose(near_zero, dv.kl_divergence(p, q), rtol=1e-3)
    np.testing.assert_allclose(near_one, dv.kl_divergence(q, p), rtol=1e-3)


@pytest.mark.parametrize("order", [1.0 - 1e-3, 1.0 + 1e-3])
def test_alpha_and_renyi_tend_to_kl(order, rng):
  p, q = random_logits(rng, (4, 6)), random_logits(rng, (4, 6))
  kl = np.asarray(dv.kl_divergence(p, q))
  alpha = np.asarray(dv.alpha_divergence(p, q, alpha=order))
  renyi = np.asarray(dv.renyi_divergence(p, q, alpha=order))
  np.testing.assert_allclose(alpha, kl, rtol=1e-2)
  np.testing.assert_allclose(renyi, kl, rtol=1e-2)
  reverse = np.asarray(dv.alpha_divergence(p, q, alpha=1.0 - order))
  np.testing.assert_allclose(reverse, np.asarray(dv.kl_divergence(q, p)), 1e-2)


# Generic path: f_divergence(get(name)) against the named function.
GENERIC = [
  ("kl", {}, dv.kl_divergence, False),
  ("reverse_kl", {}, dv.kl_divergence, True),
  ("js", {}, dv.js_divergence, False),
  ("js", {"beta": 0.3}, functools.partial(dv.js_divergence, beta=0.3), False),
  ("total_variation", {}, dv.total_variation, False),
  ("squared_hellinger", {}, dv.squared_hellinger, False),
  ("pearson_chi2", {}, dv.chi2_divergence, False),
  ("neyman_chi2", {}, dv.chi2_divergence, True),
  ("jeffreys", {}, dv.jeffreys_divergence, False),
  (
    "alpha",
    {"alpha": 0.7},
    functools.partial(dv.alpha_divergence, alpha=0.7),
    False,
  ),
]


@pytest.mark.parametrize(
  "name, params, named, swapped",
  GENERIC,
  ids=[f"{g[0]}{g[1] or ''}" for g in GENERIC],
)
def test_generic_path_equals_named_function(name, params, named, swapped, rng):
  p = random_logits(rng, (8, 6), inf_fraction=0.3)
  q = random_logits(rng, (8, 6), inf_fraction=0.3)
  generic = dv.f_divergence(dv.get(name, **params), p, q)
  expected = named(q, p) if swapped else named(p, q)
  np.testing.assert_allclose(generic, expected, rtol=1e-6, atol=1e-7)
  by_name = dv.f_divergence(name, p, q, **params)
  np.testing.assert_array_equal(by_name, generic)


def test_custom_generator_matches_named(rng):
  p, q = random_logits(rng, (5, 6)), random_logits(rng, (5, 6))
  custom = dv.custom_generator(lambda u: 0.5 * jnp.abs(u - 1.0))
  assert custom.f_at_zero == pytest.approx(0.5)
  assert custom.slope_at_infinity == pytest.approx(0.5)
  np.testing.assert_allclose(
    dv.f_divergence(custom, p, q), dv.total_variation(p, q), rtol=1e-5
  )


# Property tests on random distributions.
# One shape, so each jitted function compiles once; hypothesis varies values.
logit_rows = hnp.arrays(
  np.float32, (3, 6), elements=st.floats(-8.0, 8.0, width=32)
)


@st.composite
def logit_pairs(draw):
  p = draw(logit_rows)
  q = draw(
    hnp.arrays(np.float32, p.shape, elements=st.floats(-8.0, 8.0, width=32))
  )
  return p, q


@settings(max_examples=25, deadline=None)
@given(logit_pairs())
def test_properties(pair):
  p, q = pair
  for name, fn, _ in TRUE_DIVERGENCES:
    value = np.asarray(fn(p, q))
    assert np.all(value >= -1e-6), name
    assert np.all(np.asarray(fn(p, p)) == 0.0), name
  assert np.all(np.asarray(dv.js_divergence(p, q)) <= math.log(2) + 1e-6)
  assert np.all(np.asarray(dv.total_variation(p, q)) <= 1.0 + 1e-6)
  assert np.all(np.asarray(dv.squared_hellinger(p, q)) <= 1.0 + 1e-6)
  for fn in (
    dv.js_divergence,
    dv.total_variation,
    dv.squared_hellinger,
    dv.cauchy_schwarz_divergence,
    dv.jeffreys_divergence,
  ):
    np.testing.assert_allclose(fn(p, q), fn(q, p), rtol=1e-4, atol=1e-6)
  # Positive where the distributions differ by a clear margin.
  apart = np.asarray(dv.total_variation(p, q)) > 1e-2
  for name, fn, _ in TRUE_DIVERGENCES:
    assert np.all(np.asarray(fn(p, q))[apart] > 0), name


class TestErrors:
  def test_mismatched_shapes(self):
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3\).*\(2, 4\)"):
      dv.kl_divergence(jnp.zeros((2, 3)), jnp.zeros((2, 4)))

  @pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
  def test_invalid_temperature(self, temperature):
    with pytest.raises(ValueError, match="temperature must be"):
      dv.js_divergence(jnp.zeros(3), jnp.zeros(3), temperature=temperature)

  @pytest.mark.parametrize("beta", [-0.1, 1.5])
  def test_beta_outside_unit_interval(self, beta):
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
      dv.js_divergence(jnp.zeros(3), jnp.zeros(3), beta=beta)

  @pytest.mark.parametrize("alpha", [0.0, -1.0, math.inf])
  def test_renyi_alpha_outside_domain(self, alpha):
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
      dv.renyi_divergence(jnp.zeros(3), jnp.zeros(3), alpha=alpha)

  def test_alpha_divergence_infinite_alpha(self):
    with pytest.raises(ValueError, match="alpha must be a finite"):
      dv.alpha_divergence(jnp.zeros(3), jnp.zeros(3), alpha=math.inf)

  def test_integer_logits(self):
    with pytest.raises(TypeError, match="floating-point dtype, got int32"):
      dv.kl_divergence(jnp.zeros(3, jnp.int32), jnp.zeros(3))

  def test_where_wrong_shape(self):
    with pytest.raises(ValueError, match="does not broadcast"):
      dv.kl_divergence(jnp.zeros((4, 3)), jnp.zeros((4, 3)), where=[True] * 3)

  def test_axis_out_of_range(self):
    with pytest.raises(ValueError, match="axis 2 is out of range"):
      dv.kl_divergence(jnp.zeros((4, 3)), jnp.zeros((4, 3)), axis=2)

  def test_errors_raise_at_trace_time(self):
    fn = jax.jit(lambda p, q: dv.kl_divergence(p, q, temperature=0.0))
    with pytest.raises(ValueError, match="temperature"):
      fn.lower(jnp.zeros(3), jnp.zeros(3))

  def test_traced_temperature_is_accepted(self):
    fn = jax.jit(lambda p, q, t: dv.kl_divergence(p, q, temperature=t))
    value = fn(jnp.array([2.0, 0.0]), jnp.zeros(2), 2.0)
    assert float(value) == pytest.approx(0.1109440717, 1e-5)
