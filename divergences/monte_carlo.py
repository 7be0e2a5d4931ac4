"""Monte-Carlo estimates of f-divergences from log density ratios.

The caller supplies log(p(x) / q(x)) at samples from P, from Q, or from a
proposal with self-normalised importance weights.
"""

import jax.numpy as jnp
from jax.scipy.special import logsumexp

from divergences import generators

__all__ = ["monte_carlo_f_divergence"]

_SAMPLED_FROM = ("q", "p")


def _resolve(divergence):
  """Returns the generator for a registry name, or the generator given."""
  if isinstance(divergence, str):
    return generators.get(divergence)
  if not callable(getattr(divergence, "f", None)):
    raise TypeError(
      "divergence must be a registry name or a generator with a method f, "
      f"got {type(divergence).__name__}"
    )
  return divergence


def _as_float(name, value):
  """Converts value to float32, keeping float64 as it is."""
  dtype = jnp.result_type(value)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name} must have a floating dtype, got {dtype}")
  return jnp.asarray(value, jnp.promote_types(dtype, jnp.float32))


def _normalize_axis(axis, ndim):
  """Returns axis as a tuple of non-negative ints, checking the range."""
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  for each in axes:
    if not -ndim <= each < ndim:
      raise ValueError(
        f"axis {axis} is out of range for log_ratio with {ndim} dimensions"
      )
  return tuple(sorted(each % ndim for each in axes))


def _f_of_log_ratio(generator, log_ratio):
  """Returns f(exp(log_ratio)), in log space when the generator allows it."""
  f_of_log_ratio = getattr(generator, "f_of_log_ratio", None)
  if f_of_log_ratio is not None:
    return f_of_log_ratio(log_ratio)
  return generator.f(jnp.exp(log_ratio))


def _f_over_ratio(generator, log_ratio):
  """Returns f(r) / r for r = exp(log_ratio)."""
  # f(r) / r is the term q' f(p' / q') with p' = 1 and q' = 1 / r, so the
  # generator's log-space terms avoid forming r, e.g. KL gives log r exactly.
  terms = getattr(generator, "terms", None)
  if terms is not None:
    return terms(jnp.zeros_like(log_ratio), -log_ratio)
  return _f_of_log_ratio(generator, log_ratio) * jnp.exp(-log_ratio)


def _integrand(generator, log_ratio, sampled_from):
  """Returns the per-sample term whose mean under the sampled side is D_f."""
  # Infinite log ratios are replaced before f is evaluated (double where),
  # so gradients stay finite on the other samples.
  finite = jnp.isfinite(log_ratio)
  safe_log_ratio = jnp.where(finite, log_ratio, 0.0)
  if sampled_from == "q":
    values = _f_of_log_ratio(generator, safe_log_ratio)
    limit_at, limit = -jnp.inf, generator.f_at_zero
  else:
    values = _f_over_ratio(generator, safe_log_ratio)
    limit_at, limit = jnp.inf, generator.slope_at_infinity

  # The opposite infinity gives a sample zero density under the distribution
  # it was drawn from. No limit applies, so its term is NaN.
  values = jnp.where(log_ratio == limit_at, limit, values)
  return jnp.where(finite | (log_ratio == limit_at), values, jnp.nan)


def _masked_mean(values, mask, axes):
  """Returns the mean of values over axes where mask is set, or 0 if none."""
  count = jnp.sum(mask, axis=axes)
  total = jnp.sum(jnp.where(mask, values, 0.0), axis=axes)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def _self_normalized_mean(values, log_weights, mask, axes):
  """Returns sum softmax(log_weights) * values over axes, with a mask."""
  # Zero weights (masked or log weight -inf) contribute exactly 0, even
  # where the value is inf or NaN.
  weighted = mask & (log_weights > -jnp.inf)
  any_weighted = jnp.any(weighted, axis=axes, keepdims=True)
  log_weights = jnp.where(weighted, log_weights, -jnp.inf)
  log_weights = jnp.where(any_weighted, log_weights, 0.0)

  log_normalizer = logsumexp(log_weights, axis=axes, keepdims=True)
  weights = jnp.exp(log_weights - log_normalizer)
  terms = weights * jnp.where(weighted, values, 0.0)
  return jnp.where(
    jnp.squeeze(any_weighted, axes), jnp.sum(terms, axis=axes), 0.0
  )


def _broadcast(arrays):
  """Broadcasts a dict of arrays to one shape, naming them on failure."""
  shapes = {name: array.shape for name, array in arrays.items()}
  try:
    shape = jnp.broadcast_shapes(*shapes.values())
  except ValueError as error:
    described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
    raise ValueError(
      f"the shapes of {described} do not broadcast together"
    ) from error
  return {
    name: jnp.broadcast_to(array, shape) for name, array in arrays.items()
  }


def monte_carlo_f_divergence(
  divergence,
  log_ratio,
  *,
  sampled_from="q",
  log_weights=None,
  axis=-1,
  where=None,
):
  r"""Estimates D_f(P||Q) from log density ratios at samples.

  .. math::
    D_f(P\|Q) = \mathbb{E}_Q[f(r)] = \mathbb{E}_P[f(r) / r],
    \quad r = p(x) / q(x)

  With ``sampled_from="q"`` the estimate is the mean of f(r), and with
  ``"p"`` the mean of f(r) / r. With ``log_weights`` the samples come from
  a proposal R, ``log_weights`` is log(target / R) up to a constant, the
  target being the side named by ``sampled_from``, and the estimate is
  :math:`\sum_i \mathrm{softmax}(\log w)_i\, g(x_i)` with g as above.

  Which side to sample: the plain mean is unbiased on either side, and its
  variance is the variance of the integrand, which can differ by orders of
  magnitude between the sides. For KL between Gaussians, log r on P samples
  has every moment, while r log r on Q samples has infinite variance once
  the integral of p^2 / q diverges (scale of Q at most 1/sqrt(2) times that
  of P). The P side has the same problem with q^2 / p for generators whose
  f(r) / r blows up at r -> 0, such as the squared Hellinger distance.
  Self-normalised weights add a bias of order 1/n, and their effective
  sample size :math:`(\sum w)^2 / \sum w^2` falls when the proposal is far
  from the target.

  Support: samples from Q miss the mass of P where q = 0 (weight
  ``slope_at_infinity``), and samples from P miss the mass of Q where p = 0
  (weight ``f_at_zero``), so each side needs the other's support inside its
  own. A log ratio of -inf on Q samples (p = 0) gives f(0), and +inf on P
  samples (q = 0) gives the slope at infinity. The opposite infinities give
  NaN unless their weight is zero or they are masked.

  Args:
    divergence: a registry name such as ``"kl"``, or a generator from
      ``divergences.get``. A duck-typed object needs ``f``,
      ``f_at_zero`` and ``slope_at_infinity``, and optionally
      ``f_of_log_ratio`` and ``terms`` for overflow-free evaluation.
    log_ratio: log p(x) - log q(x) at the samples, shape ``[..., samples]``
      with the samples on ``axis``.
    sampled_from: ``"q"`` or ``"p"``, the distribution the samples (or,
      with ``log_weights``, the importance weights) stand for.
    log_weights: unnormalised log importance weights, broadcastable with
      ``log_ratio``, or None for plain averages.
    axis: the sample axis or axes of ``log_ratio``.
    where: boolean mask over samples, broadcastable with ``log_ratio``.
      False samples are left out of the average, and a row without samples
      returns 0.

  Returns:
    The estimate of D_f(P||Q), shape of the broadcast inputs without
    ``axis``, in float32 (float64 for float64 inputs).

  Raises:
    ValueError: invalid ``sampled_from``, ``axis`` out of range, or shapes
      that do not broadcast.
    TypeError: a non-float ``log_ratio`` or ``log_weights``, or a
      ``divergence`` that is neither a name nor a generator.
  """
  generator = _resolve(divergence)
  if sampled_from not in _SAMPLED_FROM:
    raise ValueError(f"sampled_from must be 'q' or 'p', got {sampled_from!r}")
  arrays = {"log_ratio": _as_float("log_ratio", log_ratio)}
  if log_weights is not None:
    arrays["log_weights"] = _as_float("log_weights", log_weights)
    dtype = jnp.promote_types(*(a.dtype for a in arrays.values()))
    arrays = {name: array.astype(dtype) for name, array in arrays.items()}
  if where is not None:
    arrays["where"] = jnp.asarray(where, dtype=bool)
  arrays = _broadcast(arrays)
  axes = _normalize_axis(axis, arrays["log_ratio"].ndim)

  log_ratio = arrays["log_ratio"]
  mask = arrays.get("where", jnp.ones(log_ratio.shape, dtype=bool))
  values = _integrand(generator, log_ratio, sampled_from)
  if log_weights is None:
    return _masked_mean(values, mask, axes)
  return _self_normalized_mean(values, arrays["log_weights"], mask, axes)
