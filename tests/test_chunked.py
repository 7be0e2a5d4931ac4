"""Tests of the chunked and fused-linear divergences against f_divergence.

Values must match the plain functions to 1e-5 relative, gradients to 1e-4
of the gradient's largest entry, at small sizes whose rows do not divide
by the chunk size.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import divergences as dv

# (id, registry name, parameters): every registry name, and js and alpha
# with parameters passed as in ``divergences.get``.
CASES = [(name, name, {}) for name in dv.NAMES if name != "alpha"] + [
  ("js_beta_0.2", "js", {"beta": 0.2}),
  ("alpha_-0.5", "alpha", {"alpha": -0.5}),
  ("alpha_0", "alpha", {"alpha": 0.0}),
  ("alpha_0.3", "alpha", {"alpha": 0.3}),
  ("alpha_1", "alpha", {"alpha": 1.0}),
  ("alpha_2", "alpha", {"alpha": 2.0}),
]
CASE_IDS = [case[0] for case in CASES]
ROWS, VOCAB, CHUNK = 11, 29, 4


def _logits(rng, shape, scale=2.0, dtype=jnp.float32):
  return jnp.asarray(rng.normal(size=shape) * scale, dtype)


def _with_zeros(p_logits, q_logits):
  """Put -inf in P only, Q only and both, on rows 0 to 2."""
  p_logits = p_logits.at[0, :3].set(-jnp.inf).at[2, 5].set(-jnp.inf)
  q_logits = q_logits.at[1, 4:6].set(-jnp.inf).at[2, 5].set(-jnp.inf)
  return p_logits, q_logits


def _values_and_grads(fn, weights, argnums, jit=True):
  """Return D per row and the gradients of sum_r w_r D_r over finite rows.

  The plain references run eagerly: their primitives compile once for all
  tests, while a jit would compile every reference anew.
  """

  def loss(*args):
    value = fn(*args)
    finite = jnp.isfinite(value)
    return jnp.sum(jnp.where(finite, value, 0.0) * weights), value

  grad_fn = jax.value_and_grad(loss, argnums, has_aux=True)

  def values_and_grads(*args):
    (_, value), grads = grad_fn(*args)
    return value, grads

  return jax.jit(values_and_grads) if jit else values_and_grads


def _assert_grads_close(actual, expected, rtol=1e-4):
  for a, e in zip(actual, expected, strict=True):
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, e, rtol=rtol, atol=1e-4 * np.max(np.abs(e)))


# Gradients of bfloat16 inputs agree to 1e-4 in float32 and are then each
# rounded to bfloat16, which moves them by up to half a step of 2^-7 each.
BFLOAT16_GRAD_RTOL = 2.0**-7 + 1e-4


class TestChunkedDivergence:
  @pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
  def test_matches_plain_with_mask_zeros_temperature(self, rng, case):
    _, name, params = case
    p, q = _with_zeros(_logits(rng, (ROWS, VOCAB)), _logits(rng, (ROWS, VOCAB)))
    where = jnp.asarray(rng.random(ROWS) > 0.25).at[2].set(True)
    weights = jnp.asarray(rng.normal(size=ROWS), jnp.float32)

    def plain(p, q):
      return dv.f_divergence(name, p, q, where=where, temperature=0.7, **params)

    def chunked(p, q):
      return dv.chunked_divergence(
        name, p, q, where=where, temperature=0.7, chunk_size=CHUNK, **params
      )

    expected_value, expected_grads = _values_and_grads(
      plain, weights, (0, 1), jit=False
    )(p, q)
    value, grads = _values_and_grads(chunked, weights, (0, 1))(p, q)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    _assert_grads_close(grads, expected_grads)

  @pytest.mark.parametrize("name", ["kl", "js", "squared_hellinger"])
  def test_bfloat16_matches_plain(self, rng, name):
    p = _logits(rng, (ROWS, VOCAB), dtype=jnp.bfloat16)
    q = _logits(rng, (ROWS, VOCAB), dtype=jnp.bfloat16)
    weights = jnp.ones(ROWS, jnp.float32)
    expected_value, expected_grads = _values_and_grads(
      lambda p, q: dv.f_divergence(name, p, q), weights, (0, 1), jit=False
    )(p, q)
    value, grads = _values_and_grads(
      lambda p, q: dv.chunked_divergence(name, p, q, chunk_size=CHUNK),
      weights,
      (0, 1),
    )(p, q)
    assert value.dtype == jnp.float32
    assert grads[1].dtype == jnp.bfloat16
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    _assert_grads_close(grads, expected_grads, rtol=BFLOAT16_GRAD_RTOL)

  def test_identical_bfloat16_is_exactly_zero(self, rng):
    p = _logits(rng, (ROWS, 1000), scale=5.0, dtype=jnp.bfloat16)
    for name in ("kl", "js", "total_variation"):
      value = dv.chunked_divergence(name, p, p, chunk_size=CHUNK)
      np.testing.assert_array_equal(value, np.zeros(ROWS))

  def test_masked_row_is_zero_with_zero_grad(self, rng):
    p, q = _logits(rng, (ROWS, VOCAB)), _logits(rng, (ROWS, VOCAB))
    p = p.at[3].set(-jnp.inf)
    where = jnp.ones(ROWS, bool).at[3].set(False).at[7].set(False)

    def loss(p, q):
      value = dv.chunked_divergence(
        "kl", p, q, where=where, temperature=0.5, chunk_size=CHUNK
      )
      return value.sum(), value

    (_, value), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(p, q)
    assert value[3] == 0.0
    assert value[7] == 0.0
    for grad in grads:
      np.testing.assert_array_equal(grad[3], 0.0)
      np.testing.assert_array_equal(grad[7], 0.0)

  def test_zero_probability_limits(self):
    p = jnp.array([[0.0, -jnp.inf], [0.0, 0.0], [0.0, -jnp.inf]])
    q = jnp.array([[-jnp.inf, 0.0], [0.0, -jnp.inf], [0.0, -jnp.inf]])
    kl = dv.chunked_divergence("kl", p, q, chunk_size=2)
    js = dv.chunked_divergence("js", p, q, chunk_size=2)
    tv = dv.chunked_divergence("total_variation", p, q, chunk_size=2)
    assert kl[0] == np.inf
    assert kl[1] == np.inf
    assert kl[2] == 0.0
    np.testing.assert_allclose(js[0], np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(tv[0], 1.0, rtol=1e-6)

  def test_extreme_logits_grads_finite(self, rng):
    p = _logits(rng, (ROWS, VOCAB), scale=1e4)
    q = _logits(rng, (ROWS, VOCAB), scale=1e4)
    for name in ("kl", "js"):
      grads = jax.grad(
        lambda p, q, name=name: dv.chunked_divergence(
          name, p, q, temperature=0.05, chunk_size=CHUNK
        ).sum(),
        argnums=(0, 1),
      )(p, q)
      assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads), name

  def test_temperature_grad_matches_plain(self, rng):
    p, q = _logits(rng, (ROWS, VOCAB)), _logits(rng, (ROWS, VOCAB))

    def plain(t):
      return dv.f_divergence("js", p, q, temperature=t).sum()

    def chunked(t):
      return dv.chunked_divergence(
        "js", p, q, temperature=t, chunk_size=CHUNK
      ).sum()

    expected = jax.grad(plain)(jnp.float32(0.8))
    actual = jax.jit(jax.grad(chunked))(jnp.float32(0.8))
    np.testing.assert_allclose(actual, expected, rtol=1e-4)

  @pytest.mark.parametrize("chunk_size", [1, ROWS, 64, None])
  def test_chunk_size_does_not_change_values(self, rng, chunk_size):
    p, q = _logits(rng, (ROWS, VOCAB)), _logits(rng, (ROWS, VOCAB))
    expected = dv.f_divergence("kl", p, q)
    value = dv.chunked_divergence("kl", p, q, chunk_size=chunk_size)
    np.testing.assert_allclose(value, expected, rtol=1e-5)

  def test_leading_dimensions_and_vmap(self, rng):
    p, q = _logits(rng, (2, 5, VOCAB)), _logits(rng, (2, 5, VOCAB))
    where = jnp.asarray(rng.random((2, 5)) > 0.3)
    expected = dv.f_divergence("js", p, q, where=where)
    value = dv.chunked_divergence("js", p, q, where=where, chunk_size=3)
    mapped = jax.vmap(
      lambda p, q, w: dv.chunked_divergence("js", p, q, where=w, chunk_size=3)
    )(p, q, where)
    assert value.shape == (2, 5)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    np.testing.assert_allclose(mapped, expected, rtol=1e-5)

  def test_no_rows_return_empty(self):
    value = dv.chunked_divergence("kl", jnp.zeros((0, 5)), jnp.zeros((0, 5)))
    assert value.shape == (0,)

  def test_jit_matches_eager(self, rng):
    p, q = _logits(rng, (ROWS, VOCAB)), _logits(rng, (ROWS, VOCAB))
    fn = lambda p, q: dv.chunked_divergence("kl", p, q, chunk_size=CHUNK)
    np.testing.assert_array_equal(jax.jit(fn)(p, q), fn(p, q))

  def test_check_grads_float64(self, rng):
    with jax.enable_x64(True):
      p = jnp.asarray(rng.normal(size=(5, 7)), jnp.float64)
      q = jnp.asarray(rng.normal(size=(5, 7)), jnp.float64)
      fn = lambda p, q: dv.chunked_divergence(
        "js", p, q, temperature=1.5, chunk_size=2
      )
      assert fn(p, q).dtype == jnp.float64
      check_grads(jax.jit(fn), (p, q), order=1, modes=["rev"])

  @settings(max_examples=4, deadline=None)
  @given(
    rows=st.integers(1, 9),
    vocab=st.integers(1, 12),
    chunk_size=st.integers(1, 10),
    seed=st.integers(0, 2**16),
  )
  def test_any_shape_matches_plain(self, rows, vocab, chunk_size, seed):
    rng = np.random.default_rng(seed)
    p, q = _logits(rng, (rows, vocab)), _logits(rng, (rows, vocab))
    expected = dv.f_divergence("kl", p, q)
    value = dv.chunked_divergence("kl", p, q, chunk_size=chunk_size)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7)

  def test_memory_stays_below_plain(self):
    p = jax.ShapeDtypeStruct((1024, 8192), jnp.float32)

    def temp_bytes(fn):
      loss = lambda q, p: fn("kl", p, q).sum()
      compiled = jax.jit(jax.value_and_grad(loss)).lower(p, p).compile()
      return compiled.memory_analysis().temp_size_in_bytes

    chunked = lambda *args: dv.chunked_divergence(*args, chunk_size=8)
    logits_bytes = 1024 * 8192 * 4
    assert temp_bytes(chunked) < logits_bytes / 16
    assert temp_bytes(dv.f_divergence) > logits_bytes

  @pytest.mark.parametrize(
    "kwargs, error",
    [
      ({"q_logits": jnp.zeros((3, 5))}, ValueError),
      ({"q_logits": jnp.zeros((3, 4), jnp.int32)}, TypeError),
      ({"temperature": 0.0}, ValueError),
      ({"where": jnp.ones(3)}, TypeError),
      ({"where": jnp.ones(4, bool)}, ValueError),
      ({"divergence": "nope"}, ValueError),
      ({"divergence": "alpha"}, ValueError),
      ({"beta": 1.5, "divergence": "js"}, ValueError),
    ],
  )
  def test_invalid_inputs_raise_like_plain(self, kwargs, error):
    args = {
      "divergence": "kl",
      "p_logits": jnp.zeros((3, 4)),
      "q_logits": jnp.zeros((3, 4)),
    }
    args.update(kwargs)
    with pytest.raises(error) as plain:
      dv.f_divergence(**args)
    with pytest.raises(error) as chunked:
      dv.chunked_divergence(**args)
    assert str(chunked.value) == str(plain.value)

  @pytest.mark.parametrize("chunk_size", [0, -2, 1.5])
  def test_invalid_chunk_size_raises(self, chunk_size):
    with pytest.raises((ValueError, TypeError), match="chunk_size"):
      dv.chunked_divergence(
        "kl", jnp.zeros((3, 4)), jnp.zeros((3, 4)), chunk_size=chunk_size
      )


def _linear_inputs(rng, rows, p_dim, q_dim, vocab, dtype=jnp.float32):
  return (
    _logits(rng, (rows, p_dim), scale=1.0, dtype=dtype),
    _logits(rng, (p_dim, vocab), scale=0.7, dtype=dtype),
    _logits(rng, (rows, q_dim), scale=1.0, dtype=dtype),
    _logits(rng, (q_dim, vocab), scale=0.7, dtype=dtype),
  )


def _plain_linear(name, params, where, temperature):
  def fn(p_hidden, p_kernel, q_hidden, q_kernel):
    p_logits = jnp.dot(p_hidden, p_kernel, preferred_element_type=jnp.float32)
    q_logits = jnp.dot(q_hidden, q_kernel, preferred_element_type=jnp.float32)
    return dv.f_divergence(
      name, p_logits, q_logits, where=where, temperature=temperature, **params
    )

  return fn


class TestFusedLinearDivergence:
  @pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
  def test_matches_plain_with_mask_and_temperature(self, rng, case):
    _, name, params = case
    inputs = _linear_inputs(rng, ROWS, 6, 9, VOCAB)
    where = jnp.asarray(rng.random(ROWS) > 0.25)
    weights = jnp.asarray(rng.normal(size=ROWS), jnp.float32)
    plain = _plain_linear(name, params, where, 1.3)

    def fused(*inputs):
      return dv.fused_linear_divergence(
        name, *inputs, where=where, temperature=1.3, chunk_size=CHUNK, **params
      )

    argnums = (0, 1, 2, 3)
    expected_value, expected_grads = _values_and_grads(
      plain, weights, argnums, jit=False
    )(*inputs)
    value, grads = _values_and_grads(fused, weights, argnums)(*inputs)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    _assert_grads_close(grads, expected_grads)

  def test_bfloat16_accumulates_in_float32(self, rng):
    inputs = _linear_inputs(rng, ROWS, 8, 4, VOCAB, dtype=jnp.bfloat16)
    weights = jnp.ones(ROWS, jnp.float32)
    argnums = (0, 1, 2, 3)
    expected_value, expected_grads = _values_and_grads(
      _plain_linear("js", {}, None, 1.0), weights, argnums, jit=False
    )(*inputs)
    value, grads = _values_and_grads(
      lambda *x: dv.fused_linear_divergence("js", *x, chunk_size=CHUNK),
      weights,
      argnums,
    )(*inputs)
    assert value.dtype == jnp.float32
    assert all(g.dtype == jnp.bfloat16 for g in grads)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    _assert_grads_close(grads, expected_grads, rtol=BFLOAT16_GRAD_RTOL)

  def test_masked_row_is_zero_with_zero_grad(self, rng):
    inputs = _linear_inputs(rng, ROWS, 5, 5, VOCAB)
    where = jnp.ones(ROWS, bool).at[4].set(False)
    value, grads = jax.value_and_grad(
      lambda *x: dv.fused_linear_divergence(
        "kl", *x, where=where, chunk_size=CHUNK
      )[4],
      argnums=(0, 1, 2, 3),
    )(*inputs)
    assert value == 0.0
    for grad in grads:
      np.testing.assert_array_equal(grad, 0.0)

  def test_stopped_teacher_gets_no_grad(self, rng):
    p_hidden, p_kernel, q_hidden, q_kernel = _linear_inputs(
      rng, ROWS, 5, 3, VOCAB
    )

    def loss(p_hidden, p_kernel, q_hidden, q_kernel):
      teacher = jax.lax.stop_gradient((p_hidden, p_kernel))
      return dv.fused_linear_divergence(
        "kl", *teacher, q_hidden, q_kernel, chunk_size=CHUNK
      ).sum()

    grads = jax.grad(loss, (0, 1, 2, 3))(p_hidden, p_kernel, q_hidden, q_kernel)
    np.testing.assert_array_equal(grads[0], 0.0)
    np.testing.assert_array_equal(grads[1], 0.0)
    assert float(jnp.abs(grads[3]).max()) > 0.0

  def test_check_grads_float64(self, rng):
    with jax.enable_x64(True):
      inputs = [
        jnp.asarray(x, jnp.float64) for x in _linear_inputs(rng, 5, 3, 4, 6)
      ]
      fn = lambda *x: dv.fused_linear_divergence("kl", *x, chunk_size=2)
      check_grads(jax.jit(fn), inputs, order=1, modes=["rev"])

  def test_logits_never_materialised(self):
    rows, hidden, vocab = 1024, 64, 8192
    args = [
      jax.ShapeDtypeStruct(shape, jnp.float32)
      for shape in [(rows, hidden), (hidden, vocab)] * 2
    ]
    loss = lambda *x: dv.fused_linear_divergence("kl", *x, chunk_size=16).sum()
    compiled = jax.jit(jax.value_and_grad(loss, (2, 3))).lower(*args).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < rows * vocab * 4 / 8

  @pytest.mark.parametrize(
    "shapes, match",
    [
      ([(4, 3), (3, 10), (4, 5), (5, 11)], "vocabulary"),
      ([(4, 3), (2, 10), (4, 5), (5, 10)], "p_hidden"),
      ([(4, 3), (3, 10), (6, 5), (5, 10)], "rows"),
      ([(4, 3), (3, 10, 1), (4, 5), (5, 10)], "p_kernel"),
    ],
  )
  def test_invalid_shapes_raise(self, shapes, match):
    inputs = [jnp.zeros(shape) for shape in shapes]
    with pytest.raises(ValueError, match=match):
      dv.fused_linear_divergence("kl", *inputs)

  def test_invalid_temperature_raises_like_plain(self):
    inputs = [jnp.zeros(s) for s in [(4, 3), (3, 10), (4, 5), (5, 10)]]
    with pytest.raises(ValueError, match="temperature"):
      dv.fused_linear_divergence("kl", *inputs, temperature=-1.0)


def _row_sharded(fn, num_inputs, replicated=()):
  """Run ``fn`` per device on rows sharded over all devices."""
  mesh = jax.sharding.Mesh(jax.devices(), ("data",))
  rows = jax.sharding.PartitionSpec("data")
  specs = tuple(
    jax.sharding.PartitionSpec() if i in replicated else rows
    for i in range(num_inputs)
  )
  return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=rows)


class TestShardMap:
  def test_chunked_matches_plain(self, rng):
    rows = 2 * jax.device_count()
    p, q = _logits(rng, (rows, VOCAB)), _logits(rng, (rows, VOCAB))
    temperature = jnp.float32(0.7)
    weights = jnp.asarray(rng.normal(size=rows), jnp.float32)

    def chunked(p, q, t):
      fn = lambda p, q, t: dv.chunked_divergence(
        "js", p, q, temperature=t, chunk_size=3
      )
      return _row_sharded(fn, 3, replicated=(2,))(p, q, t)

    def plain(p, q, t):
      return dv.f_divergence("js", p, q, temperature=t)

    argnums = (0, 1, 2)
    expected_value, expected_grads = _values_and_grads(
      plain, weights, argnums, jit=False
    )(p, q, temperature)
    value, grads = _values_and_grads(chunked, weights, argnums)(
      p, q, temperature
    )
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    _assert_grads_close(grads, expected_grads)

  def test_fused_matches_plain(self, rng):
    inputs = _linear_inputs(rng, 2 * jax.device_count(), 4, 6, VOCAB)
    weights = jnp.asarray(rng.normal(size=inputs[0].shape[0]), jnp.float32)

    def fused(*inputs):
      fn = lambda *x: dv.fused_linear_divergence("kl", *x, chunk_size=3)
      return _row_sharded(fn, 4, replicated=(1, 3))(*inputs)

    argnums = (0, 1, 2, 3)
    plain = _plain_linear("kl", {}, None, 1.0)
    expected_value, expected_grads = _values_and_grads(
      plain, weights, argnums, jit=False
    )(*inputs)
    value, grads = _values_and_grads(fused, weights, argnums)(*inputs)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    _assert_grads_close(grads, expected_grads)

  def test_chunked_gathers_nothing(self):
    sharding = jax.sharding.NamedSharding(
      jax.sharding.Mesh(jax.devices(), ("data",)),
      jax.sharding.PartitionSpec("data"),
    )
    logits = jax.ShapeDtypeStruct((64, 256), jnp.float32, sharding=sharding)
    fn = lambda p, q: dv.chunked_divergence("kl", p, q, chunk_size=2)
    loss = lambda q, p: _row_sharded(fn, 2)(p, q).sum()
    compiled = jax.jit(jax.grad(loss)).lower(logits, logits).compile()
    assert "all-gather" not in compiled.as_text()
