"""Chunked f-divergences over large vocabularies, in bounded memory.

Rows go through ``lax.scan`` in chunks; the custom VJP saves per-row
log-softmax statistics and recomputes each chunk in the backward pass.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from divergences import categorical, generators

Array = jax.Array

# Entries of one [chunk, vocab] block when chunk_size is None: 1 MiB per
# float32 input, which gives 8 rows at a vocabulary of 32,000 and 2 rows at
# 128,000. NOTE: chosen on a 2-core CPU with 1 MiB of L2 per core. There,
# at 32,000, times for 1 to 32 rows varied by up to 60% with no trend in
# the chunk size, and at 128,000, 16 or 32 rows took up to 55% longer than
# 1 to 4 rows (docs/chunk_sizes.md). Accelerators may prefer more rows.
DEFAULT_CHUNK_ELEMENTS = 2**18


def default_chunk_size(vocab_size: int, elements: int) -> int:
  """Return the largest power of two of rows that fit in ``elements``."""
  rows = max(1, elements // max(vocab_size, 1))
  return 1 << (rows.bit_length() - 1)


def check_chunk_size(chunk_size) -> int:
  """Return ``chunk_size``, raising unless it is an int >= 1."""
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
    raise TypeError(f"chunk_size must be an int, got {chunk_size!r}")
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  return chunk_size


def prepare_temperature(temperature) -> tuple[bool, Array]:
  """Return whether logits need dividing, and the temperature as an array.

  A Python temperature of exactly 1 skips the division, which leaves the
  logits bitwise unchanged, as dividing by 1.0 would.
  """
  categorical.check_temperature(temperature)
  is_one = isinstance(temperature, int | float) and temperature == 1
  return not is_one, jnp.asarray(temperature)


# Per-chunk maths, shared with the fused form. A chunk is [rows, vocab].


def scale_logits(logits, mask, temperature, divide: bool, dtype) -> Array:
  """Cast to ``dtype``, zero masked rows and divide by the temperature."""
  logits = jnp.where(mask[:, None], logits.astype(dtype), 0.0)
  return logits / temperature if divide else logits


def softmax_stats(scaled: Array) -> tuple[Array, Array]:
  """Return the row max and the log-sum-exp of the logits shifted by it.

  Both are saved so that ``log_probs`` reproduces ``jax.nn.log_softmax``:
  (x - max) - log_norm keeps the precision that x - (max + log_norm) loses
  for large logits.
  """
  shift = jnp.max(scaled, axis=-1)
  log_norm = jnp.log(jnp.sum(jnp.exp(scaled - shift[:, None]), axis=-1))
  return shift, log_norm


def log_probs(scaled: Array, stats: tuple[Array, Array]) -> Array:
  shift, log_norm = stats
  return (scaled - shift[:, None]) - log_norm[:, None]


def chunk_value(generator, p_scaled, q_scaled, mask):
  """Return D per row of a chunk and the statistics of both sides."""
  p_stats = softmax_stats(p_scaled)
  q_stats = softmax_stats(q_scaled)
  log_p = log_probs(p_scaled, p_stats)
  log_q = log_probs(q_scaled, q_stats)
  terms = categorical.generator_terms(generator, log_p, log_q)
  return categorical.reduce_rows(terms, mask), p_stats + q_stats


def chunk_logit_grads(generator, p_scaled, q_scaled, stats, row_cotangent):
  """Return the gradients of sum_r c_r D_r w.r.t. both scaled logits.

  With g = dt/dlog p for the per-entry terms t, the gradient through the
  log-softmax is g - p sum_i g_i. The same holds for Q.
  """
  log_p = log_probs(p_scaled, stats[:2])
  log_q = log_probs(q_scaled, stats[2:])
  terms, vjp = jax.vjp(
    functools.partial(categorical.generator_terms, generator), log_p, log_q
  )
  seed = jnp.broadcast_to(row_cotangent[:, None], terms.shape)
  g_p, g_q = vjp(seed.astype(terms.dtype))
  d_p = g_p - jnp.exp(log_p) * jnp.sum(g_p, axis=-1, keepdims=True)
  d_q = g_q - jnp.exp(log_q) * jnp.sum(g_q, axis=-1, keepdims=True)
  return d_p, d_q


def temperature_grad(d_scaled, scaled, temperature, rows) -> Array:
  """Return sum_i dD/ds_i ds_i/dT for s = z / T, i.e. -sum_i d_i s_i / T.

  Only the rows where ``rows`` is True count. Entries with s = -inf have
  d = 0 and are left out instead of giving nan.
  """
  keep = rows[:, None] & (scaled > -jnp.inf)
  return -jnp.sum(jnp.where(keep, d_scaled * scaled, 0.0)) / temperature


# The scan over row chunks.


def scan_chunks(chunk_fn, num_rows: int, chunk_size: int):
  """Apply ``chunk_fn(take, fresh)`` to row chunks of a fixed size in a scan.

  ``take(x)`` slices the chunk's ``chunk_size`` rows out of a ``[num_rows,
  ...]`` array, and ``fresh`` (``[chunk_size]``, boolean) marks the rows no
  earlier chunk covered. ``chunk_fn`` returns ``(rows, increment)``: a
  pytree of ``[chunk_size, ...]`` arrays, written into ``[num_rows, ...]``
  outputs, and a pytree summed over chunks. When ``chunk_size`` does not
  divide ``num_rows``, the last chunk ends at the last row and overlaps the
  one before it, so every chunk has one shape and no input is padded. Its
  rewritten rows get the same values again; increments must leave out the
  rows that are not fresh.

  Returns:
    ``(rows, total)``: the ``[num_rows, ...]`` outputs and the sums.
  """
  chunk_size = min(chunk_size, num_rows)
  num_chunks = -(-num_rows // chunk_size)
  fresh = jnp.ones(chunk_size, bool)
  rows_type, total_type = jax.eval_shape(
    lambda: chunk_fn(_taker(0, chunk_size), fresh)
  )
  rows = jax.tree.map(lambda t: _zeros((num_rows,) + t.shape[1:], t), rows_type)
  total = jax.tree.map(lambda t: _zeros(t.shape, t), total_type)

  def body(carry, index):
    rows, total = carry
    start = jnp.minimum(index * chunk_size, num_rows - chunk_size)
    fresh = start + jnp.arange(chunk_size) >= index * chunk_size
    chunk_rows, increment = chunk_fn(_taker(start, chunk_size), fresh)
    rows = jax.tree.map(
      lambda out, x: lax.dynamic_update_slice_in_dim(out, x, start, 0),
      rows,
      chunk_rows,
    )
    return (rows, jax.tree.map(jnp.add, total, increment)), None

  carry, _ = lax.scan(body, (rows, total), jnp.arange(num_chunks))
  return carry


def _taker(start, size: int):
  return lambda x: lax.dynamic_slice_in_dim(x, start, size, axis=0)


def varying_axes(x) -> frozenset[str]:
  """Return the ``shard_map`` axes over which ``x`` varies, if any.

  ``x`` is an array, a tracer or the output of ``jax.eval_shape``.
  """
  abstract = x if isinstance(x, jax.ShapeDtypeStruct) else jax.typeof(x)
  manual = getattr(abstract, "manual_axis_type", None)
  if manual is not None:
    return frozenset(manual.varying)
  # NOTE: checked with JAX 0.10 only; ``vma`` is a guess at the name that
  # older releases give the same set.
  return frozenset(getattr(abstract, "vma", ()))


def _zeros(shape, like) -> Array:
  """Zeros that vary over the same ``shard_map`` axes as ``like``.

  Inside ``shard_map`` a scan carry must keep its type, so an accumulator
  that the chunks' device-varying values update must start out varying.
  """
  zeros = jnp.zeros(shape, like.dtype)
  axes = tuple(sorted(varying_axes(like)))
  return lax.pcast(zeros, axes, to="varying") if axes else zeros


def sum_to_primal(cotangent: Array, primal: Array) -> Array:
  """Sum a cotangent over the ``shard_map`` axes its primal does not vary on.

  A replicated input (a kernel, the temperature) gets one gradient
  contribution per device, which a custom VJP must add up itself.
  """
  axes = tuple(sorted(varying_axes(cotangent) - varying_axes(primal)))
  return lax.psum(cotangent, axes) if axes else cotangent


# The chunked divergence on logits.


def _forward(generator, chunk_size, divide, p_logits, q_logits, mask, temp):
  dtype = categorical.compute_dtype(p_logits, q_logits)

  def chunk_fn(take, fresh):
    chunk_mask = take(mask)
    p_scaled = scale_logits(take(p_logits), chunk_mask, temp, divide, dtype)
    q_scaled = scale_logits(take(q_logits), chunk_mask, temp, divide, dtype)
    return chunk_value(generator, p_scaled, q_scaled, chunk_mask), ()

  (value, stats), _ = scan_chunks(chunk_fn, mask.shape[0], chunk_size)
  return value, stats


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _chunked_rows(
  generator, chunk_size, divide, p_logits, q_logits, mask, temp
):
  value, _ = _forward(
    generator, chunk_size, divide, p_logits, q_logits, mask, temp
  )
  return value


def _chunked_rows_fwd(
  generator, chunk_size, divide, p_logits, q_logits, mask, temp
):
  value, stats = _forward(
    generator, chunk_size, divide, p_logits, q_logits, mask, temp
  )
  return value, (p_logits, q_logits, mask, temp, stats)


def _chunked_rows_bwd(generator, chunk_size, divide, residuals, cotangent):
  p_logits, q_logits, mask, temp, stats = residuals
  dtype = categorical.compute_dtype(p_logits, q_logits)
  cotangent = jnp.where(mask, cotangent, 0.0)

  def chunk_fn(take, fresh):
    chunk_mask = take(mask)
    p_scaled = scale_logits(take(p_logits), chunk_mask, temp, divide, dtype)
    q_scaled = scale_logits(take(q_logits), chunk_mask, temp, divide, dtype)
    chunk_stats = tuple(take(s) for s in stats)
    d_p, d_q = chunk_logit_grads(
      generator, p_scaled, q_scaled, chunk_stats, take(cotangent)
    )
    d_temp = jnp.zeros((), temp.dtype)
    if divide:
      for d, scaled in [(d_p, p_scaled), (d_q, q_scaled)]:
        d_temp += temperature_grad(d, scaled, temp, fresh)
      d_p, d_q = d_p / temp, d_q / temp
    grads = (d_p.astype(p_logits.dtype), d_q.astype(q_logits.dtype))
    return grads, d_temp

  (d_p, d_q), d_temp = scan_chunks(chunk_fn, mask.shape[0], chunk_size)
  d_p, d_q = sum_to_primal(d_p, p_logits), sum_to_primal(d_q, q_logits)
  return d_p, d_q, None, sum_to_primal(d_temp, temp)


_chunked_rows.defvjp(_chunked_rows_fwd, _chunked_rows_bwd)


def chunked_divergence(
  divergence,
  p_logits: Array,
  q_logits: Array,
  *,
  where: Array | None = None,
  temperature: float = 1.0,
  chunk_size: int | None = None,
  **params,
) -> Array:
  """Compute D_f(P||Q) per row in chunks of rows, in bounded memory.

  .. math::
    D_f(P \\| Q) = \\sum_i q_i f(p_i / q_i)

  The limits and conventions are those of ``f_divergence``. Values and
  gradients agree with it up to rounding (the tests check 1e-5 and 1e-4
  relative), and only the memory differs. Rows go through ``lax.scan``
  ``chunk_size`` at a time, and the custom VJP keeps the inputs and four
  per-row statistics (the max and the shifted log-sum-exp of each side),
  recomputing each chunk's log-probabilities in the backward pass.
  Temporary memory is therefore a few ``[chunk_size, vocab]`` blocks plus
  ``[tokens]`` vectors, instead of several ``[tokens, vocab]`` arrays.

  NOTE: with rows sharded across devices, call it inside ``jax.shard_map``
  so that each device scans its own rows. Under a plain ``jax.jit``, XLA
  gathers every row onto every device for the scan's slices.

  Args:
    divergence: a registry name (see ``generators.NAMES``) or a
      ``Generator``.
    p_logits: logits of P, ``[tokens, vocab]`` (any leading shape works,
      vocabulary last); -inf marks zero probability.
    q_logits: logits of Q, same shape as ``p_logits``.
    where: boolean mask over rows, broadcastable to ``[tokens]``; masked
      rows return 0 with zero gradient.
    temperature: divides both logits before the softmax; must be > 0.
    chunk_size: rows per chunk. The default is the largest power of two
      that keeps a chunk within ``DEFAULT_CHUNK_ELEMENTS`` entries: 8 rows
      at a vocabulary of 32,000, 2 rows at 128,000. When it does not divide
      the rows, the last chunk overlaps the one before it.
    **params: generator parameters when ``divergence`` is a name, e.g.
      ``beta=0.3`` for js or ``alpha=0.5`` for alpha.

  Returns:
    D_f(P||Q) per row, ``[tokens]``, in float32 (float64 for float64
    inputs). Gradients flow to both logit arrays and to an array
    temperature, in the inputs' dtypes.
  """
  generator = generators.resolve(divergence, **params)
  p_logits, q_logits, _ = categorical.check_logits(p_logits, q_logits, axis=-1)
  divide, temp = prepare_temperature(temperature)
  row_shape = p_logits.shape[:-1]
  mask = categorical.row_mask(where, row_shape).reshape(-1)

  vocab = p_logits.shape[-1]
  if chunk_size is None:
    chunk_size = default_chunk_size(vocab, DEFAULT_CHUNK_ELEMENTS)
  chunk_size = check_chunk_size(chunk_size)
  if mask.shape[0] == 0:
    return jnp.zeros(row_shape, categorical.compute_dtype(p_logits, q_logits))
  dtype = categorical.compute_dtype(p_logits, q_logits)
  value = _chunked_rows(
    generator,
    chunk_size,
    divide,
    p_logits.reshape(-1, vocab),
    q_logits.reshape(-1, vocab),
    mask,
    temp.astype(dtype),
  )
  return value.reshape(row_shape)
