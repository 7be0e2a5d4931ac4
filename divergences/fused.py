"""The f-divergence between softmax(hidden @ kernel) distributions, fused.

Each chunk of rows computes its logits inside the scan, so the full
``[tokens, vocab]`` logits never exist, in the forward or backward pass.
"""

import functools

import jax
import jax.numpy as jnp

from divergences import categorical, chunked, generators

Array = jax.Array

# Rows per chunk when chunk_size is None. Every chunk reads both kernels
# whole, so the rows, not the vocabulary, set the matmul work per byte of
# kernel read. NOTE: chosen on a 2-core CPU, where 32 or 512 rows took 9
# to 56% longer than 128 rows at vocabularies of 32,000 and 128,000
# (docs/chunk_sizes.md). Accelerators may prefer more rows.
DEFAULT_CHUNK_SIZE = 128


def _check_shapes(p_hidden, p_kernel, q_hidden, q_kernel) -> None:
  for name, x in [
    ("p_hidden", p_hidden),
    ("p_kernel", p_kernel),
    ("q_hidden", q_hidden),
    ("q_kernel", q_kernel),
  ]:
    categorical.check_float_dtype(name, x)
  for side, hidden, kernel in [
    ("p", p_hidden, p_kernel),
    ("q", q_hidden, q_kernel),
  ]:
    if kernel.ndim != 2:
      raise ValueError(
        f"{side}_kernel must be [hidden, vocab], got shape {kernel.shape}"
      )
    if hidden.ndim < 1 or hidden.shape[-1] != kernel.shape[0]:
      raise ValueError(
        f"{side}_hidden of shape {hidden.shape} must end in the "
        f"{side}_kernel's hidden size {kernel.shape[0]}"
      )
  if p_kernel.shape[1] != q_kernel.shape[1]:
    raise ValueError(
      "p_kernel and q_kernel must have the same vocabulary size, got "
      f"shapes {p_kernel.shape} and {q_kernel.shape}"
    )
  if p_hidden.shape[:-1] != q_hidden.shape[:-1]:
    raise ValueError(
      "p_hidden and q_hidden must have the same rows, got shapes "
      f"{p_hidden.shape} and {q_hidden.shape}"
    )


def _scaled_logits(hidden, kernel, mask, temp, divide, dtype) -> Array:
  logits = jnp.dot(hidden.astype(dtype), kernel)
  return chunked.scale_logits(logits, mask, temp, divide, dtype)


def _forward(generator, chunk_size, divide, inputs, mask, temp):
  p_hidden, p_kernel, q_hidden, q_kernel = inputs
  dtype = categorical.compute_dtype(*inputs)
  p_kernel, q_kernel = p_kernel.astype(dtype), q_kernel.astype(dtype)

  def chunk_fn(take, fresh):
    chunk_mask = take(mask)
    p_scaled = _scaled_logits(
      take(p_hidden), p_kernel, chunk_mask, temp, divide, dtype
    )
    q_scaled = _scaled_logits(
      take(q_hidden), q_kernel, chunk_mask, temp, divide, dtype
    )
    return chunked.chunk_value(generator, p_scaled, q_scaled, chunk_mask), ()

  (value, stats), _ = chunked.scan_chunks(chunk_fn, mask.shape[0], chunk_size)
  return value, stats


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused_rows(generator, chunk_size, divide, inputs, mask, temp):
  value, _ = _forward(generator, chunk_size, divide, inputs, mask, temp)
  return value


def _fused_rows_fwd(generator, chunk_size, divide, inputs, mask, temp):
  value, stats = _forward(generator, chunk_size, divide, inputs, mask, temp)
  return value, (inputs, mask, temp, stats)


def _fused_rows_bwd(generator, chunk_size, divide, residuals, cotangent):
  inputs, mask, temp, stats = residuals
  dtype = categorical.compute_dtype(*inputs)
  hiddens = (inputs[0], inputs[2])
  kernels = (inputs[1].astype(dtype), inputs[3].astype(dtype))
  cotangent = jnp.where(mask, cotangent, 0.0)

  def chunk_fn(take, fresh):
    chunk_mask = take(mask)
    chunk_hiddens = [take(h).astype(dtype) for h in hiddens]
    scaled = [
      _scaled_logits(h, k, chunk_mask, temp, divide, dtype)
      for h, k in zip(chunk_hiddens, kernels, strict=True)
    ]
    d_scaled = chunked.chunk_logit_grads(
      generator, *scaled, tuple(take(s) for s in stats), take(cotangent)
    )
    d_temp = jnp.zeros((), temp.dtype)
    if divide:
      for d, s in zip(d_scaled, scaled, strict=True):
        d_temp += chunked.temperature_grad(d, s, temp, fresh)
      d_scaled = [d / temp for d in d_scaled]

    d_hidden = tuple(d @ k.T for d, k in zip(d_scaled, kernels, strict=True))
    # Rows an earlier chunk covered must not count twice in the kernels.
    d_kernel = tuple(
      jnp.where(fresh[:, None], h, 0.0).T @ d
      for h, d in zip(chunk_hiddens, d_scaled, strict=True)
    )
    return d_hidden, (d_kernel, d_temp)

  (d_p_hidden, d_q_hidden), (d_kernel, d_temp) = chunked.scan_chunks(
    chunk_fn, mask.shape[0], chunk_size
  )
  grads = (d_p_hidden, d_kernel[0], d_q_hidden, d_kernel[1])
  grads = tuple(
    chunked.sum_to_primal(g.astype(x.dtype), x)
    for g, x in zip(grads, inputs, strict=True)
  )
  return grads, None, chunked.sum_to_primal(d_temp, temp)


_fused_rows.defvjp(_fused_rows_fwd, _fused_rows_bwd)


def fused_linear_divergence(
  divergence,
  p_hidden: Array,
  p_kernel: Array,
  q_hidden: Array,
  q_kernel: Array,
  *,
  where: Array | None = None,
  temperature: float = 1.0,
  chunk_size: int | None = None,
  **params,
) -> Array:
  """Compute D_f(P||Q) per row for P, Q = softmax(hidden @ kernel), fused.

  .. math::
    D_f(P \\| Q) = \\sum_i q_i f(p_i / q_i), \\quad
    P = \\mathrm{softmax}(h_P W_P / T), \\;
    Q = \\mathrm{softmax}(h_Q W_Q / T)

  The limits and conventions are those of ``f_divergence`` applied to
  ``p_hidden @ p_kernel`` and ``q_hidden @ q_kernel``, and values agree
  with it up to rounding. The logits stay in float32 (float64 for float64
  inputs) instead of being rounded to the inputs' dtype. Rows go through
  ``lax.scan`` ``chunk_size`` at a time and each chunk computes its own
  logits, so temporary memory is a few ``[chunk_size, vocab]`` blocks. The
  custom VJP saves the inputs and per-row log-softmax statistics. The
  backward pass recomputes each chunk's logits, so it runs one more pair
  of matmuls than autodiff would, and accumulates the kernels' gradients
  in float32. Inside ``jax.shard_map`` the gradients of replicated inputs
  are summed over devices.

  NOTE: with rows sharded across devices, call it inside ``jax.shard_map``
  as for ``chunked_divergence``; under a plain ``jax.jit`` XLA gathers the
  hidden states onto every device.

  Args:
    divergence: a registry name (see ``generators.NAMES``) or a
      ``Generator``.
    p_hidden: hidden states of P, ``[tokens, p_hidden_dim]`` (any leading
      shape works).
    p_kernel: output projection of P, ``[p_hidden_dim, vocab]``.
    q_hidden: hidden states of Q, ``[tokens, q_hidden_dim]``.
    q_kernel: output projection of Q, ``[q_hidden_dim, vocab]``.
    where: boolean mask over rows, broadcastable to ``[tokens]``; masked
      rows return 0 with zero gradient.
    temperature: divides both logits before the softmax; must be > 0.
    chunk_size: rows per chunk, ``DEFAULT_CHUNK_SIZE`` (128) by default.
      Temporary memory grows as ``chunk_size * vocab``. When it does not
      divide the rows, the last chunk overlaps the one before it.
    **params: generator parameters when ``divergence`` is a name, e.g.
      ``beta=0.3`` for js or ``alpha=0.5`` for alpha.

  Returns:
    D_f(P||Q) per row, ``[tokens]``, in float32 (float64 for float64
    inputs). Gradients flow to all four arrays; wrap the teacher's in
    ``jax.lax.stop_gradient`` to skip its share of the backward pass.
  """
  generator = generators.resolve(divergence, **params)
  inputs = tuple(
    jnp.asarray(x) for x in (p_hidden, p_kernel, q_hidden, q_kernel)
  )
  _check_shapes(*inputs)
  divide, temp = chunked.prepare_temperature(temperature)
  row_shape = inputs[0].shape[:-1]
  mask = categorical.row_mask(where, row_shape).reshape(-1)

  if chunk_size is None:
    chunk_size = DEFAULT_CHUNK_SIZE
  chunk_size = chunked.check_chunk_size(chunk_size)
  p_hidden, p_kernel, q_hidden, q_kernel = inputs
  flat = (
    p_hidden.reshape(-1, p_hidden.shape[-1]),
    p_kernel,
    q_hidden.reshape(-1, q_hidden.shape[-1]),
    q_kernel,
  )
  dtype = categorical.compute_dtype(*inputs)
  if mask.shape[0] == 0:
    return jnp.zeros(row_shape, dtype)
  value = _fused_rows(
    generator, chunk_size, divide, flat, mask, temp.astype(dtype)
  )
  return value.reshape(row_shape)
