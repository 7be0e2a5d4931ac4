"""Divergences between categorical distributions given as logits.

Every function takes ``p_logits`` and ``q_logits`` of the same shape, e.g.
``[batch, vocab]``, and returns D(P||Q) per row, shape ``[batch]``.
"""

import math
import operator

import jax
import jax.numpy as jnp

from divergences import generators

Array = jax.Array
_INF = math.inf


def check_float_dtype(name: str, x: Array) -> None:
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
      f"{name} must have a floating-point dtype, got {x.dtype}; cast it "
      f"with {name}.astype(jnp.float32)"
    )


def check_temperature(temperature) -> None:
  """Raise ValueError for a concrete temperature that is not finite and > 0.

  A traced temperature cannot be checked at trace time and passes through.
  """
  try:
    value = float(temperature)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return
  if not (value > 0 and math.isfinite(value)):
    raise ValueError(
      f"temperature must be a finite number > 0, got {temperature}"
    )


def compute_dtype(*arrays: Array) -> jnp.dtype:
  """Return float64 if any input is float64, else float32."""
  if any(x.dtype == jnp.float64 for x in arrays):
    return jnp.dtype(jnp.float64)
  return jnp.dtype(jnp.float32)


def check_logits(p_logits, q_logits, *, axis) -> tuple[Array, Array, int]:
  """Validate a pair of logit arrays and return them with a normalised axis.

  Raises:
    TypeError: if either array is not floating-point.
    ValueError: if the shapes differ, the logits are scalars or ``axis`` is
      out of range.
  """
  p_logits = jnp.asarray(p_logits)
  q_logits = jnp.asarray(q_logits)
  check_float_dtype("p_logits", p_logits)
  check_float_dtype("q_logits", q_logits)
  if p_logits.shape != q_logits.shape:
    raise ValueError(
      "p_logits and q_logits must have the same shape, got "
      f"{p_logits.shape} and {q_logits.shape}"
    )
  if p_logits.ndim == 0:
    raise ValueError("logits must have at least one dimension, got a scalar")
  axis = operator.index(axis)
  if not -p_logits.ndim <= axis < p_logits.ndim:
    raise ValueError(
      f"axis {axis} is out of range for logits of shape {p_logits.shape}"
    )
  return p_logits, q_logits, axis


def normalized_log_probs(p_logits, q_logits, *, axis, where, temperature):
  """Validate the inputs and return log P, log Q and the row mask.

  Both logit arrays are moved to ``[..., vocab]`` with the vocabulary last,
  cast to the computation dtype, divided by the temperature and normalised
  with ``log_softmax``. Masked rows are replaced by zeros before that, so
  they contribute finite values and zero gradients.

  Returns:
    ``(log_p, log_q, mask)``: two ``[..., vocab]`` arrays and a boolean
    ``[...]`` row mask (all True when ``where`` is None).
  """
  p_logits, q_logits, axis = check_logits(p_logits, q_logits, axis=axis)
  check_temperature(temperature)

  dtype = compute_dtype(p_logits, q_logits)
  p_logits = jnp.moveaxis(p_logits, axis, -1).astype(dtype)
  q_logits = jnp.moveaxis(q_logits, axis, -1).astype(dtype)
  row_shape = p_logits.shape[:-1]
  mask = row_mask(where, row_shape)

  keep = mask[..., None]
  p_logits = jnp.where(keep, p_logits, 0.0) / temperature
  q_logits = jnp.where(keep, q_logits, 0.0) / temperature
  log_p = jax.nn.log_softmax(p_logits, axis=-1)
  log_q = jax.nn.log_softmax(q_logits, axis=-1)
  return log_p, log_q, mask


def row_mask(where, row_shape: tuple[int, ...]) -> Array:
  """Broadcast ``where`` to the row shape; all True when it is None."""
  if where is None:
    return jnp.ones(row_shape, dtype=bool)
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(f"where must be a boolean array, got dtype {where.dtype}")
  try:
    return jnp.broadcast_to(where, row_shape)
  except ValueError:
    raise ValueError(
      f"where of shape {where.shape} does not broadcast to the row shape "
      f"{row_shape} (the logits' shape without the vocabulary axis)"
    ) from None


def reduce_rows(terms: Array, mask: Array) -> Array:
  """Sum ``terms`` over the last axis; masked rows become exactly 0."""
  return jnp.where(mask, jnp.sum(terms, axis=-1), 0.0)


def generator_terms(
  generator: generators.Generator, log_p: Array, log_q: Array
) -> Array:
  """Return q f(p / q) per entry, with the limits where p or q is zero.

  Where both are positive the generator's log-space ``terms`` is used;
  where only q is positive the value is q f(0); where only p is positive it
  is p lim_{u->inf} f(u)/u; where both are zero it is 0. The unused branch
  receives finite inputs, so gradients stay finite.
  """
  p_pos = log_p > -jnp.inf
  q_pos = log_q > -jnp.inf
  both = p_pos & q_pos
  interior = generator.terms(
    jnp.where(both, log_p, 0.0), jnp.where(both, log_q, 0.0)
  )
  only_p = _limit_terms(log_p, generator.slope_at_infinity)
  only_q = _limit_terms(log_q, generator.f_at_zero)
  return jnp.where(
    both, interior, jnp.where(p_pos, only_p, jnp.where(q_pos, only_q, 0.0))
  )


def _limit_terms(log_probs: Array, limit: float) -> Array:
  """probs * limit; an infinite limit gives inf even where probs underflow."""
  if math.isinf(limit):
    return jnp.full_like(log_probs, limit)
  return jnp.exp(log_probs) * limit


def f_divergence(
  divergence,
  p_logits: Array,
  q_logits: Array,
  *,
  axis: int = -1,
  where: Array | None = None,
  temperature: float = 1.0,
  **params,
) -> Array:
  """Compute the f-divergence D_f(P||Q) between two categoricals, per row.

  .. math::
    D_f(P \\| Q) = \\sum_i q_i f(p_i / q_i)

  with q_i f(0) where p_i = 0, p_i lim_{u->inf} f(u)/u where q_i = 0, and 0
  where both are 0.

  Args:
    divergence: a registry name (see ``generators.NAMES``) or a
      ``Generator``, e.g. from ``divergences.custom_generator``.
    p_logits: logits of P, e.g. ``[batch, vocab]``; -inf marks zero
      probability.
    q_logits: logits of Q, same shape as ``p_logits``.
    axis: the vocabulary axis.
    where: boolean mask over rows, broadcastable to the logits' shape
      without ``axis``; masked rows return 0 with zero gradient.
    temperature: divides both logits before the softmax; must be > 0.
    **params: generator parameters when ``divergence`` is a name, e.g.
      ``beta=0.3`` for js or ``alpha=0.5`` for alpha.

  Returns:
    D_f(P||Q) per row, shape of the logits without ``axis``, in float32
    (float64 for float64 inputs).
  """
  generator = generators.resolve(divergence, **params)
  log_p, log_q, mask = normalized_log_probs(
    p_logits, q_logits, axis=axis, where=where, temperature=temperature
  )
  return reduce_rows(generator_terms(generator, log_p, log_q), mask)


_COMMON_ARGS = """
  Args:
    p_logits: logits of P, e.g. ``[batch, vocab]``; -inf marks zero
      probability.
    q_logits: logits of Q, same shape as ``p_logits``.
    axis: the vocabulary axis.
    where: boolean mask over rows, broadcastable to the logits' shape
      without ``axis``; masked rows return 0 with zero gradient.
    temperature: divides both logits before the softmax; must be > 0.
"""

_RETURNS = """
  Returns:
    The divergence per row, shape of the logits without ``axis``, in float32
    (float64 for float64 inputs).
"""


def kl_divergence(
  p_logits, q_logits, *, axis=-1, where=None, temperature=1.0
) -> Array:
  return f_divergence(
    "kl", p_logits, q_logits, axis=axis, where=where, temperature=temperature
  )


kl_divergence.__doc__ = (
  """Compute the Kullback-Leibler divergence KL(P||Q) per row.

  .. math::
    KL(P \\| Q) = \\sum_i p_i (\\log p_i - \\log q_i)

  0 log 0 = 0; +inf where some p_i > 0 has q_i = 0. Forward KL in
  distillation is ``kl_divergence(teacher_logits, student_logits)``.
"""
  + _COMMON_ARGS
  + _RETURNS
)


def js_divergence(
  p_logits, q_logits, *, beta=0.5, axis=-1, where=None, temperature=1.0
) -> Array:
  return f_divergence(
    generators.get("js", beta=beta),
    p_logits,
    q_logits,
    axis=axis,
    where=where,
    temperature=temperature,
  )


js_divergence.__doc__ = (
  """Compute the generalised Jensen-Shannon divergence JSD(beta) per row.

  .. math::
    JSD_\\beta(P \\| Q) = \\beta KL(P \\| M) + (1 - \\beta) KL(Q \\| M),
    \\quad M = \\beta P + (1 - \\beta) Q

  This is the convention of "On-Policy Distillation of Language Models"
  (Agarwal et al. 2024, GKD, eq. 1) and of TRL's ``generalized_jsd_loss``
  with P the teacher. beta = 0.5 gives the symmetric JS divergence,
  bounded by log 2 (reached for disjoint supports). The value is continuous
  in beta and tends to 0 at both ends: JSD(0) = JSD(1) = 0 exactly, and
  JSD(beta) / beta -> KL(P||Q) as beta -> 0, JSD(beta) / (1 - beta) ->
  KL(Q||P) as beta -> 1. For the KL endpoints call ``kl_divergence``;
  unlike TRL, beta in {0, 1} does not switch to KL.
"""
  + _COMMON_ARGS
  + """    beta: the mixture weight of P, in [0, 1].
"""
  + _RETURNS
)


def total_variation(
  p_logits, q_logits, *, axis=-1, where=None, temperature=1.0
) -> Array:
  return f_divergence(
    "total_variation",
    p_logits,
    q_logits,
    axis=axis,
    where=where,
    temperature=temperature,
  )


total_variation.__doc__ = (
  """Compute the total variation distance per row, in [0, 1].

  .. math::
    TV(P, Q) = \\tfrac12 \\sum_i |p_i - q_i|
"""
  + _COMMON_ARGS
  + _RETURNS
)


def squared_hellinger(
  p_logits, q_logits, *, axis=-1, where=None, temperature=1.0
) -> Array:
  return f_divergence(
    "squared_hellinger",
    p_logits,
    q_logits,
    axis=axis,
    where=where,
    temperature=temperature,
  )


squared_hellinger.__doc__ = (
  """Compute the squared Hellinger distance per row, in [0, 1].

  .. math::
    H^2(P, Q) = 1 - \\sum_i \\sqrt{p_i q_i}
      = \\tfrac12 \\sum_i (\\sqrt{p_i} - \\sqrt{q_i})^2

  The second form is the one computed, so identical inputs give exactly 0.
"""
  + _COMMON_ARGS
  + _RETURNS
)


def chi2_divergence(
  p_logits, q_logits, *, axis=-1, where=None, temperature=1.0
) -> Array:
  return f_divergence(
    "pearson_chi2",
    p_logits,
    q_logits,
    axis=axis,
    where=where,
    temperature=temperature,
  )


chi2_divergence.__doc__ = (
  """Compute the Pearson chi-square divergence per row.

  .. math::
    \\chi^2(P \\| Q) = \\sum_i (p_i - q_i)^2 / q_i

  +inf where some p_i > 0 has q_i = 0. Neyman's chi-square is
  ``chi2_divergence(q_logits, p_logits)``.
"""
  + _COMMON_ARGS
  + _RETURNS
)


def alpha_divergence(
  p_logits, q_logits, *, alpha, axis=-1, where=None, temperature=1.0
) -> Array:
  return f_divergence(
    generators.get("alpha", alpha=alpha),
    p_logits,
    q_logits,
    axis=axis,
    where=where,
    temperature=temperature,
  )


alpha_divergence.__doc__ = (
  """Compute Amari's alpha-divergence per row.

  .. math::
    D_\\alpha(P \\| Q) = \\frac{1 - \\sum_i p_i^\\alpha q_i^{1 - \\alpha}}
      {\\alpha (1 - \\alpha)}

  The limits are KL(P||Q) at alpha = 1 and KL(Q||P) at alpha = 0, and the
  value is continuous in alpha. alpha = 0.5 gives 4 times the squared
  Hellinger distance. The value is +inf where alpha >= 1 and some p_i > 0
  has q_i = 0, or alpha <= 0 and some q_i > 0 has p_i = 0.
"""
  + _COMMON_ARGS
  + """    alpha: any finite real number.
"""
  + _RETURNS
)


def jeffreys_divergence(
  p_logits, q_logits, *, axis=-1, where=None, temperature=1.0
) -> Array:
  return f_divergence(
    "jeffreys",
    p_logits,
    q_logits,
    axis=axis,
    where=where,
    temperature=temperature,
  )


jeffreys_divergence.__doc__ = (
  """Compute the Jeffreys divergence KL(P||Q) + KL(Q||P) per row.

  .. math::
    J(P, Q) = \\sum_i (p_i - q_i)(\\log p_i - \\log q_i)
"""
  + _COMMON_ARGS
  + _RETURNS
)


def _check_renyi_alpha(alpha) -> float:
  if not isinstance(alpha, int | float) or isinstance(alpha, bool):
    raise TypeError(f"alpha must be a Python float, got {alpha!r}")
  if not (alpha > 0 and math.isfinite(alpha)):
    raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
  return float(alpha)


def renyi_divergence(
  p_logits, q_logits, *, alpha, axis=-1, where=None, temperature=1.0
) -> Array:
  alpha = _check_renyi_alpha(alpha)
  if alpha == 1.0:
    return kl_divergence(
      p_logits, q_logits, axis=axis, where=where, temperature=temperature
    )
  log_p, log_q, mask = normalized_log_probs(
    p_logits, q_logits, axis=axis, where=where, temperature=temperature
  )
  p_pos = log_p > -jnp.inf
  q_pos = log_q > -jnp.inf
  both = p_pos & q_pos
  ratio = jnp.where(both, log_p, 0.0) - jnp.where(both, log_q, 0.0)
  # log(p^a q^(1-a)) = log q + a (log p - log q), exactly log q when p = q.
  exponent = jnp.where(both, jnp.where(both, log_q, 0.0) + alpha * ratio, 0.0)
  # p > 0 = q contributes q^(1-a) p^a = +inf for alpha > 1 and 0 below.
  p_only = jnp.inf if alpha > 1 else -jnp.inf
  exponent = jnp.where(both, exponent, jnp.where(p_pos, p_only, -jnp.inf))

  log_sum = jax.nn.logsumexp(exponent, axis=-1)
  # Near P = Q, log1p(sum_i (p_i^a q_i^(1-a) - q_i)) keeps the exact zero;
  # inside that branch every exponent is below 0.5, so capping it there
  # changes nothing and keeps the other branch's gradient finite.
  capped = jnp.minimum(exponent, 0.5)
  near = jnp.abs(log_sum) < 0.5
  shifted = jnp.sum(jnp.exp(capped) - jnp.exp(log_q), axis=-1)
  log_sum_near = jnp.log1p(jnp.where(near, shifted, 0.0))
  value = jnp.where(near, log_sum_near, log_sum) / (alpha - 1.0)
  return jnp.where(mask, value, 0.0)


renyi_divergence.__doc__ = (
  """Compute the Renyi divergence of order alpha per row.

  .. math::
    D_\\alpha(P \\| Q) = \\frac{1}{\\alpha - 1}
      \\log \\sum_i p_i^\\alpha q_i^{1 - \\alpha}

  alpha = 1 is KL(P||Q), the limit of the formula; alpha = 0.5 gives
  -2 log sum_i sqrt(p_i q_i). The value is +inf for disjoint supports when
  alpha < 1, and wherever some p_i > 0 has q_i = 0 when alpha > 1.
"""
  + _COMMON_ARGS
  + """    alpha: the order, a finite number > 0.
"""
  + _RETURNS
)


def cauchy_schwarz_divergence(
  p_logits, q_logits, *, axis=-1, where=None, temperature=1.0
) -> Array:
  log_p, log_q, mask = normalized_log_probs(
    p_logits, q_logits, axis=axis, where=where, temperature=temperature
  )
  lse = jax.nn.logsumexp
  # Each sum of products is a log-sum-exp of log-probabilities; the three
  # terms cancel exactly when P = Q because log_p + log_p == 2 * log_p.
  cross = lse(log_p + log_q, axis=-1)
  value = lse(2.0 * log_p, axis=-1) + lse(2.0 * log_q, axis=-1) - 2.0 * cross
  return jnp.where(mask, value, 0.0)


cauchy_schwarz_divergence.__doc__ = (
  """Compute the Cauchy-Schwarz divergence per row.

  .. math::
    D_{CS}(P, Q) = -\\log \\frac{(\\sum_i p_i q_i)^2}
      {\\sum_i p_i^2 \\sum_i q_i^2}

  Symmetric, non-negative, 0 iff P = Q, and +inf for disjoint supports.
  It is not an f-divergence.
"""
  + _COMMON_ARGS
  + _RETURNS
)


def _cross_entropy_terms(log_p: Array, log_q: Array) -> Array:
  """-p log q per entry: 0 where p = 0, +inf where p > 0 = q."""
  p_pos = log_p > -jnp.inf
  q_pos = log_q > -jnp.inf
  both = p_pos & q_pos
  interior = -jnp.exp(jnp.where(both, log_p, -jnp.inf)) * jnp.where(
    both, log_q, 0.0
  )
  return jnp.where(both, interior, jnp.where(p_pos, jnp.inf, 0.0))


def symmetric_cross_entropy(
  p_logits, q_logits, *, axis=-1, where=None, temperature=1.0
) -> Array:
  log_p, log_q, mask = normalized_log_probs(
    p_logits, q_logits, axis=axis, where=where, temperature=temperature
  )
  terms = _cross_entropy_terms(log_p, log_q) + _cross_entropy_terms(
    log_q, log_p
  )
  return reduce_rows(0.5 * terms, mask)


symmetric_cross_entropy.__doc__ = (
  """Compute the mean of the two cross-entropies per row.

  .. math::
    SCE(P, Q) = -\\tfrac12 \\sum_i (p_i \\log q_i + q_i \\log p_i)

  This is the symmetric cross-entropy of "Robust Mean Teacher for
  Continual and Gradual Test-Time Adaptation" (Doebler et al. 2023). It is
  not a divergence: it equals the entropy of P, not 0, when P = Q.
"""
  + _COMMON_ARGS
  + _RETURNS
)
