"""Value cases from public bug reports, and more inputs of the same kinds.

``cases/categorical.json`` contains inputs on which public libraries once gave
a wrong value, a NaN or a NaN gradient, with the right value computed in
float64. ``OWN_CASES`` below adds inputs of the same kinds for the other
divergences, with values written out by hand.
"""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divergences as dv

RTOL, ATOL = 2e-4, 2e-5
LOG2 = math.log(2.0)
INF = math.inf


def _to_float(value):
  if isinstance(value, list):
    return [_to_float(v) for v in value]
  if isinstance(value, str):
    return float(value)  # "inf" and "-inf"
  return value


def load_cases():
  path = pathlib.Path(__file__).parent / "cases" / "categorical.json"
  return json.loads(path.read_text())


def case(name, fn, p, q, expected, kind, grad_finite=True, **kwargs):
  return {
    "name": name,
    "fn": fn,
    "p_logits": p,
    "q_logits": q,
    "kwargs": kwargs,
    "expected": expected,
    "grad_finite": grad_finite,
    "kind": kind,
  }


NEG = "-inf"
OWN_CASES = [
  # zero probabilities: one-hot P against uniform Q over two entries.
  case(
    "tv one-hot vs uniform",
    "total_variation",
    [0, NEG],
    [0, 0],
    0.5,
    "zero probabilities",
  ),
  case(
    "chi2 one-hot vs uniform",
    "chi2_divergence",
    [0, NEG],
    [0, 0],
    1.0,
    "zero probabilities",
  ),  # (1 - 1/2)^2 / (1/2) + (1/2)^2 / (1/2)
  case(
    "jeffreys one-hot vs uniform is inf",
    "jeffreys_divergence",
    [0, NEG],
    [0, 0],
    "inf",
    "zero probabilities",
    grad_finite=False,
  ),
  case(
    "cs one-hot vs uniform",
    "cauchy_schwarz_divergence",
    [0, NEG],
    [0, 0],
    LOG2,
    "zero probabilities",
  ),  # -log((1/2)^2 / (1 * 1/2))
  case(
    "renyi half one-hot vs uniform",
    "renyi_divergence",
    [0, NEG],
    [0, 0],
    LOG2,
    "zero probabilities",
    alpha=0.5,
  ),  # -2 log sqrt(1/2)
  case(
    "renyi two one-hot vs uniform",
    "renyi_divergence",
    [0, NEG],
    [0, 0],
    LOG2,
    "zero probabilities",
    alpha=2.0,
  ),  # log(1 / (1/2))
  case(
    "alpha half disjoint",
    "alpha_divergence",
    [0, NEG],
    [NEG, 0],
    4.0,
    "zero probabilities",
    alpha=0.5,
  ),  # (1 - 0) / (1/4)
  case(
    "alpha two support mismatch is inf",
    "alpha_divergence",
    [0, 0],
    [0, NEG],
    "inf",
    "zero probabilities",
    grad_finite=False,
    alpha=2.0,
  ),
  case(
    "hellinger disjoint is one",
    "squared_hellinger",
    [0, NEG],
    [NEG, 0],
    1.0,
    "zero probabilities",
  ),
  case(
    "sce disjoint is inf",
    "symmetric_cross_entropy",
    [0, NEG],
    [NEG, 0],
    "inf",
    "zero probabilities",
    grad_finite=False,
  ),
  case(
    "js beta 0.3 disjoint is binary entropy",
    "js_divergence",
    [0, NEG],
    [NEG, 0],
    -0.3 * math.log(0.3) - 0.7 * math.log(0.7),
    "zero probabilities",
    beta=0.3,
  ),
  # -inf logits on both sides drop out of every divergence.
  # P = [1/2, 1/2, 0], Q = [1/4, 3/4, 0].
  case(
    "tv token masked on both sides",
    "total_variation",
    [0, 0, NEG],
    [0, math.log(3.0), NEG],
    0.25,
    "-inf logits",
  ),
  case(
    "js token masked on both sides",
    "js_divergence",
    [0, NEG, NEG],
    [0, NEG, NEG],
    0.0,
    "-inf logits",
  ),
  case(
    "chi2 token masked on both sides",
    "chi2_divergence",
    [0, 0, NEG],
    [0, math.log(3.0), NEG],
    1.0 / 3.0,
    "-inf logits",
  ),
  # temperature: scaled logits give P = [1/2, 1/2], Q = [1/4, 3/4].
  case(
    "js temperature 2",
    "js_divergence",
    [2 * math.log(1.0), 0.0],
    [2 * math.log(1.0 / 3.0), 0.0],
    0.033822075568605,
    "temperature",
    temperature=2.0,
  ),
  case(
    "hellinger temperature 0.05",
    "squared_hellinger",
    [0.05 * math.log(1.0), 0.0],
    [0.05 * math.log(1.0 / 3.0), 0.0],
    0.034074173710932,
    "temperature",
    temperature=0.05,
  ),
  case(
    "tv temperature 0.05",
    "total_variation",
    [0.0, 0.05],
    [0.05, 0.0],
    0.462117157260010,
    "temperature",
    temperature=0.05,
  ),  # tanh(1/2)
  # extreme magnitudes.
  case(
    "js extreme logits",
    "js_divergence",
    [1e4, 0.0, -1e4],
    [0.0, 1e4, 0.0],
    LOG2,
    "extreme magnitudes",
  ),
  case(
    "tv extreme logits",
    "total_variation",
    [1e4, 0.0, -1e4],
    [0.0, 1e4, 0.0],
    1.0,
    "extreme magnitudes",
  ),
  case(
    "renyi two extreme logits",
    "renyi_divergence",
    [1e4, 0.0],
    [0.0, 1e4],
    1e4,
    "extreme magnitudes",
    alpha=2.0,
  ),
  case(
    "cs extreme logits",
    "cauchy_schwarz_divergence",
    [1e4, 0.0],
    [0.0, 1e4],
    2e4 - 2 * LOG2,
    "extreme magnitudes",
  ),  # -log(4e^-2e4)
  # identical inputs give exactly 0 in low precision.
  case(
    "bf16 identical logits hellinger",
    "squared_hellinger",
    [60.0, 0.0, -60.0, 30.0],
    [60.0, 0.0, -60.0, 30.0],
    0.0,
    "dtype",
    dtype="bfloat16",
  ),
  case(
    "f16 identical logits chi2",
    "chi2_divergence",
    [6.0, 0.0, -6.0, 3.0],
    [6.0, 0.0, -6.0, 3.0],
    0.0,
    "dtype",
    dtype="float16",
  ),
  case(
    "bf16 identical logits cs",
    "cauchy_schwarz_divergence",
    [60.0, 0.0, -60.0, 30.0],
    [60.0, 0.0, -60.0, 30.0],
    0.0,
    "precision",
    dtype="bfloat16",
  ),
  case(
    "bf16 identical logits renyi",
    "renyi_divergence",
    [60.0, 0.0, -60.0, 30.0],
    [60.0, 0.0, -60.0, 30.0],
    0.0,
    "precision",
    dtype="bfloat16",
    alpha=2.0,
  ),
  # argument order: P comes first.
  case(
    "kl argument order",
    "kl_divergence",
    [0.0, NEG],
    [0.0, 0.0],
    LOG2,
    "argument order",
  ),
  case(
    "kl swapped order is inf",
    "kl_divergence",
    [0.0, 0.0],
    [0.0, NEG],
    "inf",
    "argument order",
    grad_finite=False,
  ),
  # direction convention: JSD_beta(P||Q) = JSD_(1-beta)(Q||P).
  case(
    "generalized js beta 0.9 swapped",
    "js_divergence",
    [-0.6931471805599453, -0.6931471805599453],
    [-0.10536051565782628, -2.3025850929940455],
    0.033602998615303845,
    "direction convention",
    beta=0.9,
  ),
  # masking: masked rows return 0, even when full of -inf.
  case(
    "js masked row of -inf",
    "js_divergence",
    [[NEG, NEG], [0.0, NEG]],
    [[NEG, NEG], [NEG, 0.0]],
    [0.0, LOG2],
    "masking",
    where=[False, True],
  ),
]


def _ids(cases):
  return [c["name"] for c in cases]


def _arrays(c):
  kwargs = dict(c["kwargs"])
  dtype = jnp.dtype(kwargs.pop("dtype", "float32"))
  p = jnp.asarray(np.array(_to_float(c["p_logits"]), np.float64), dtype)
  q = jnp.asarray(np.array(_to_float(c["q_logits"]), np.float64), dtype)
  if "where" in kwargs:
    kwargs["where"] = jnp.asarray(kwargs["where"])
  return p, q, kwargs


def check_case(c):
  fn = getattr(dv, c["fn"])
  p, q, kwargs = _arrays(c)
  value = np.asarray(fn(p, q, **kwargs), np.float64)
  expected = np.array(_to_float(c["expected"]), np.float64)
  np.testing.assert_allclose(value, expected, rtol=RTOL, atol=ATOL)
  assert np.all(value >= -1e-6)
  if c["grad_finite"]:
    grads = jax.grad(lambda a, b: fn(a, b, **kwargs).sum(), (0, 1))(p, q)
    for grad in grads:
      assert np.all(np.isfinite(np.asarray(grad, np.float32)))


@pytest.mark.parametrize("c", load_cases(), ids=_ids(load_cases()))
def test_shared_case(c):
  check_case(c)


@pytest.mark.parametrize("c", OWN_CASES, ids=_ids(OWN_CASES))
def test_own_case(c):
  check_case(c)


def test_own_cases_cover_every_shared_kind():
  shared = {c["kind"] for c in load_cases()}
  own = {c["kind"] for c in OWN_CASES}
  assert shared <= own, shared - own
