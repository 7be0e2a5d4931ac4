"""Generators of f-divergences: f, its derivatives, conjugate and limits.

An f-divergence is D_f(P||Q) = sum_i q_i f(p_i / q_i) for a convex f with
f(1) = 0. Each generator here carries everything the trainers need from f.
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
_INF = math.inf


@dataclasses.dataclass(frozen=True, eq=False)
class Generator:
  """The generator f of an f-divergence, with what the trainers derive from it.

  Every callable acts elementwise on arrays of ratios ``u = p / q >= 0``.

  Attributes:
    name: registry name, e.g. ``"js"``.
    params: the parameters the generator was built with, e.g.
      ``{"beta": 0.5}``.
    f: the generator f(u), convex with f(1) = 0.
    f_prime: f'(u), the f-DPO link and the f-DPG pseudo-reward.
    f_double_prime: f''(u).
    score_weight: h(r) = r^2 f''(r), the weight on the score difference in
      the f-distill gradient ("One-step Diffusion Models with f-Divergence
      Distribution Matching", Xu, Nie and Vahdat, 2025).
    conjugate: the Fenchel conjugate f*(t) = sup_{u >= 0} t u - f(u); +inf
      outside its domain.
    activation: the f-GAN output activation, mapping R into the domain of
      f* (the one listed by Nowozin et al. 2016, "f-GAN", rescaled to the
      f used here, or slope_at_infinity - softplus(-v) where it lists none).
      NOTE: in float32 a bounded activation rounds onto the boundary of the
      domain for v above about 15, where f* is +inf.
    f_at_zero: f(0) = lim_{u -> 0} f(u), the weight of q where p = 0.
    slope_at_infinity: lim_{u -> inf} f(u) / u, the weight of p where q = 0.
    f_of_log_ratio: f(exp(log_r)) evaluated from the log ratio log_r without
      overflow where the generator allows it.
    terms: ``terms(log_p, log_q)`` returns q f(p / q) from finite
      log-probabilities, in log space.
  """

  name: str
  params: dict[str, float]
  f: Callable[[Array], Array]
  f_prime: Callable[[Array], Array]
  f_double_prime: Callable[[Array], Array]
  score_weight: Callable[[Array], Array]
  conjugate: Callable[[Array], Array]
  activation: Callable[[Array], Array]
  f_at_zero: float
  slope_at_infinity: float
  f_of_log_ratio: Callable[[Array], Array]
  terms: Callable[[Array, Array], Array]

  def __repr__(self) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
    return f"Generator({self.name!r}{', ' if args else ''}{args})"


def _bounded_activation(slope: float) -> Callable[[Array], Array]:
  """Map R onto (-inf, slope), the domain of f* when the slope is finite."""
  return lambda v: slope - jax.nn.softplus(-v)


def _identity(v: Array) -> Array:
  return v


def _default_terms(f_of_log_ratio):
  """q f(p / q) as exp(log q) f(exp(log p - log q))."""
  return lambda log_p, log_q: jnp.exp(log_q) * f_of_log_ratio(log_p - log_q)


# Forward KL: f(u) = u log u.


def _kl() -> Generator:
  return Generator(
    name="kl",
    params={},
    f=lambda u: jax.scipy.special.xlogy(u, u),
    f_prime=lambda u: jnp.log(u) + 1.0,
    f_double_prime=lambda u: 1.0 / u,
    score_weight=lambda r: r,
    conjugate=lambda t: jnp.exp(t - 1.0),
    activation=_identity,
    f_at_zero=0.0,
    slope_at_infinity=_INF,
    f_of_log_ratio=lambda log_r: jnp.exp(log_r) * log_r,
    # p (log p - log q) avoids forming the ratio, which overflows.
    terms=lambda log_p, log_q: jnp.exp(log_p) * (log_p - log_q),
  )


def _reverse_kl() -> Generator:
  return Generator(
    name="reverse_kl",
    params={},
    f=lambda u: -jnp.log(u),
    f_prime=lambda u: -1.0 / u,
    f_double_prime=lambda u: 1.0 / (u * u),
    score_weight=lambda r: jnp.ones_like(r),
    conjugate=lambda t: jnp.where(
      t < 0, -1.0 - jnp.log(-jnp.where(t < 0, t, -1.0)), _INF
    ),
    activation=lambda v: -jnp.exp(-v),
    f_at_zero=_INF,
    slope_at_infinity=0.0,
    f_of_log_ratio=lambda log_r: -log_r,
    terms=lambda log_p, log_q: -jnp.exp(log_q) * (log_p - log_q),
  )


# Generalised Jensen-Shannon: beta KL(P||M) + (1 - beta) KL(Q||M) with
# M = beta P + (1 - beta) Q, so f(u) = beta u log(u / m) - (1 - beta) log m
# and m = beta u + 1 - beta.


def _log_mixture_ratios(log_r: Array, beta: float) -> tuple[Array, Array]:
  """Return log(m / q) and log(m / p) for m = beta p + (1 - beta) q.

  Both are exactly 0 where log_r = log p - log q is 0 and finite for finite
  log_r. The one that stays small is computed with log1p so that neither is
  formed by subtracting two large numbers.
  """
  neg = jnp.where(log_r <= 0, log_r, 0.0)
  pos = jnp.where(log_r > 0, log_r, 0.0)
  # p <= q: m / q = 1 + beta (p/q - 1).
  m_over_q = jnp.log1p(beta * jnp.expm1(neg))
  # p > q: m / p = 1 + (1 - beta) (q/p - 1).
  m_over_p = jnp.log1p((1.0 - beta) * jnp.expm1(-pos))
  below = log_r <= 0
  log_m_q = jnp.where(below, m_over_q, m_over_p + pos)
  log_m_p = jnp.where(below, m_over_q - neg, m_over_p)
  return log_m_q, log_m_p


def _js(beta: float = 0.5) -> Generator:
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta must be in [0, 1], got {beta}")
  if beta in (0.0, 1.0):
    return _js_endpoint(beta)
  b, c = beta, 1.0 - beta
  slope = -math.log(b) * b
  f_zero = -math.log(c) * c

  def f_of_log_ratio(log_r):
    log_m_q, log_m_p = _log_mixture_ratios(log_r, b)
    return -b * jnp.exp(log_r) * log_m_p - c * log_m_q

  def terms(log_p, log_q):
    log_m_q, log_m_p = _log_mixture_ratios(log_p - log_q, b)
    return -b * jnp.exp(log_p) * log_m_p - c * jnp.exp(log_q) * log_m_q

  def conjugate(t):
    # f'(u) = beta log(u / m) = t gives m = (1 - beta) / (1 - beta e^{t/beta}).
    inside = t < slope
    s = jnp.exp(jnp.where(inside, t, slope - 1.0) / b)
    return jnp.where(inside, -c * jnp.log((1.0 - b * s) / c), _INF)

  return Generator(
    name="js",
    params={"beta": beta},
    f=lambda u: f_of_log_ratio(jnp.log(u)),
    f_prime=lambda u: b * (jnp.log(u) - jnp.log(b * u + c)),
    f_double_prime=lambda u: b * c / (u * (b * u + c)),
    score_weight=lambda r: b * c * r / (b * r + c),
    conjugate=conjugate,
    activation=_bounded_activation(slope),
    f_at_zero=f_zero,
    slope_at_infinity=slope,
    f_of_log_ratio=f_of_log_ratio,
    terms=terms,
  )


def _js_endpoint(beta: float) -> Generator:
  """JSD(0) and JSD(1): M equals Q or P, so f and the divergence are 0."""
  return Generator(
    name="js",
    params={"beta": beta},
    f=jnp.zeros_like,
    f_prime=jnp.zeros_like,
    f_double_prime=jnp.zeros_like,
    score_weight=jnp.zeros_like,
    conjugate=lambda t: jnp.where(t <= 0, 0.0, _INF),
    activation=_bounded_activation(0.0),
    f_at_zero=0.0,
    slope_at_infinity=0.0,
    f_of_log_ratio=jnp.zeros_like,
    terms=lambda log_p, log_q: jnp.zeros_like(log_p),
  )


def _total_variation() -> Generator:
  return Generator(
    name="total_variation",
    params={},
    f=lambda u: 0.5 * jnp.abs(u - 1.0),
    f_prime=lambda u: 0.5 * jnp.sign(u - 1.0),
    f_double_prime=jnp.zeros_like,
    score_weight=jnp.zeros_like,
    conjugate=lambda t: jnp.where(t > 0.5, _INF, jnp.maximum(t, -0.5)),
    activation=lambda v: 0.5 * jnp.tanh(v),
    f_at_zero=0.5,
    slope_at_infinity=0.5,
    f_of_log_ratio=lambda log_r: 0.5 * jnp.abs(jnp.expm1(log_r)),
    terms=lambda log_p, log_q: 0.5 * jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)),
  )


def _squared_hellinger() -> Generator:
  def conjugate(t):
    inside = t < 0.5
    t_in = jnp.where(inside, t, 0.0)
    return jnp.where(inside, t_in / (1.0 - 2.0 * t_in), _INF)

  return Generator(
    name="squared_hellinger",
    params={},
    f=lambda u: 0.5 * jnp.square(jnp.sqrt(u) - 1.0),
    f_prime=lambda u: 0.5 * (1.0 - jax.lax.rsqrt(u)),
    f_double_prime=lambda u: 0.25 * u ** (-1.5),
    score_weight=lambda r: 0.25 * jnp.sqrt(r),
    conjugate=conjugate,
    activation=lambda v: 0.5 * (1.0 - jnp.exp(-v)),
    f_at_zero=0.5,
    slope_at_infinity=0.5,
    f_of_log_ratio=lambda log_r: 0.5 * jnp.square(jnp.expm1(0.5 * log_r)),
    # (sqrt p - sqrt q)^2 / 2 is exactly 0 for P = Q, unlike 1 - sum sqrt(pq).
    terms=lambda log_p, log_q: (
      0.5 * jnp.square(jnp.exp(0.5 * log_p) - jnp.exp(0.5 * log_q))
    ),
  )


def _pearson_terms(log_p: Array, log_q: Array) -> Array:
  """(p - q)^2 / q, exactly 0 for p = q and free of overflow for small p/q."""
  log_r = log_p - log_q
  near = log_r <= 1.0
  log_r_near = jnp.where(near, log_r, 0.0)
  near_value = (jnp.exp(log_p) - jnp.exp(log_q)) * jnp.expm1(log_r_near)
  # Far above 1, p^2 / q - 2p + q loses nothing to cancellation.
  log_p_far = jnp.where(near, 0.0, log_p)
  log_r_far = jnp.where(near, 2.0, log_r)
  far_value = (
    jnp.exp(log_p_far + log_r_far) - 2.0 * jnp.exp(log_p_far) + jnp.exp(log_q)
  )
  return jnp.where(near, near_value, far_value)


def _pearson_chi2() -> Generator:
  return Generator(
    name="pearson_chi2",
    params={},
    f=lambda u: jnp.square(u - 1.0),
    f_prime=lambda u: 2.0 * (u - 1.0),
    f_double_prime=lambda u: jnp.full_like(u, 2.0),
    score_weight=lambda r: 2.0 * r * r,
    conjugate=lambda t: jnp.where(t >= -2.0, t + 0.25 * t * t, -1.0),
    activation=_identity,
    f_at_zero=1.0,
    slope_at_infinity=_INF,
    f_of_log_ratio=lambda log_r: jnp.square(jnp.expm1(log_r)),
    terms=_pearson_terms,
  )


def _neyman_chi2() -> Generator:
  def conjugate(t):
    inside = t < 1.0
    t_in = jnp.where(inside, t, 0.0)
    return jnp.where(inside, 2.0 - 2.0 * jnp.sqrt(1.0 - t_in), _INF)

  return Generator(
    name="neyman_chi2",
    params={},
    f=lambda u: jnp.square(1.0 - u) / u,
    f_prime=lambda u: 1.0 - 1.0 / (u * u),
    f_double_prime=lambda u: 2.0 / (u * u * u),
    score_weight=lambda r: 2.0 / r,
    conjugate=conjugate,
    activation=lambda v: 1.0 - jnp.exp(-v),
    f_at_zero=_INF,
    slope_at_infinity=1.0,
    f_of_log_ratio=lambda log_r: jnp.exp(log_r) * jnp.square(jnp.expm1(-log_r)),
    terms=lambda log_p, log_q: _pearson_terms(log_q, log_p),
  )


def _jeffreys() -> Generator:
  f_prime = lambda u: jnp.log(u) + 1.0 - 1.0 / u  # noqa: E731
  f = lambda u: (u - 1.0) * jnp.log(u)  # noqa: E731
  return Generator(
    name="jeffreys",
    params={},
    f=f,
    f_prime=f_prime,
    f_double_prime=lambda u: 1.0 / u + 1.0 / (u * u),
    score_weight=lambda r: r + 1.0,
    conjugate=functools.partial(
      numerical_conjugate, f, f_prime, slope_at_infinity=_INF
    ),
    activation=_identity,
    f_at_zero=_INF,
    slope_at_infinity=_INF,
    f_of_log_ratio=lambda log_r: jnp.expm1(log_r) * log_r,
    terms=lambda log_p, log_q: (
      (jnp.exp(log_p) - jnp.exp(log_q)) * (log_p - log_q)
    ),
  )


# Softened reverse KL: f(u) = (u + 1) log((u + 1) / (2u)), which gives
# D_f(P||Q) = 2 KL(M||P) with M = (P + Q) / 2.


def _softened_reverse_kl() -> Generator:
  log2 = math.log(2.0)

  def f_of_log_ratio(log_r):
    return (jnp.exp(log_r) + 1.0) * (jax.nn.softplus(-log_r) - log2)

  def terms(log_p, log_q):
    log_r = log_p - log_q
    return (jnp.exp(log_p) + jnp.exp(log_q)) * (jax.nn.softplus(-log_r) - log2)

  f = lambda u: f_of_log_ratio(jnp.log(u))  # noqa: E731
  f_prime = lambda u: jnp.log1p(1.0 / u) - log2 - 1.0 / u  # noqa: E731
  return Generator(
    name="softened_reverse_kl",
    params={},
    f=f,
    f_prime=f_prime,
    f_double_prime=lambda u: 1.0 / (u * u * (u + 1.0)),
    score_weight=lambda r: 1.0 / (r + 1.0),
    conjugate=functools.partial(
      numerical_conjugate, f, f_prime, slope_at_infinity=-log2
    ),
    activation=_bounded_activation(-log2),
    f_at_zero=_INF,
    slope_at_infinity=-log2,
    f_of_log_ratio=f_of_log_ratio,
    terms=terms,
  )


# Amari alpha-divergence: f(u) = (u^a - 1 - a (u - 1)) / (a (a - 1)), whose
# limits are u log u - u + 1 at a = 1 and -log u + u - 1 at a = 0.


def _alpha(alpha: float) -> Generator:
  if not math.isfinite(alpha):
    raise ValueError(f"alpha must be a finite real number, got {alpha}")
  if alpha == 1.0:
    return _alpha_one()
  if alpha == 0.0:
    return _alpha_zero()
  a = alpha
  scale = 1.0 / (a * (a - 1.0))
  f_zero = 1.0 / a if a > 0 else _INF
  slope = 1.0 / (1.0 - a) if a < 1 else _INF

  def terms(log_p, log_q):
    log_r = log_p - log_q
    p, q = jnp.exp(log_p), jnp.exp(log_q)
    # p^a q^(1-a) - q is exactly 0 when p = q.
    return scale * ((jnp.exp(log_q + a * log_r) - q) - a * (p - q))

  def conjugate(t):
    base = 1.0 + (a - 1.0) * t
    valid = base > 0
    value = (jnp.where(valid, base, 1.0) ** (a / (a - 1.0)) - 1.0) / a
    # Below the domain the supremum sits at u = 0 for a > 1.
    return jnp.where(valid, value, -1.0 / a if a > 1 else _INF)

  return Generator(
    name="alpha",
    params={"alpha": alpha},
    f=lambda u: scale * (u**a - 1.0 - a * (u - 1.0)),
    f_prime=lambda u: (u ** (a - 1.0) - 1.0) / (a - 1.0),
    f_double_prime=lambda u: u ** (a - 2.0),
    score_weight=lambda r: r**a,
    conjugate=conjugate,
    activation=_bounded_activation(slope) if a < 1 else _identity,
    f_at_zero=f_zero,
    slope_at_infinity=slope,
    f_of_log_ratio=lambda log_r: (
      scale * (jnp.expm1(a * log_r) - a * jnp.expm1(log_r))
    ),
    terms=terms,
  )


def _alpha_one() -> Generator:
  def terms(log_p, log_q):
    p = jnp.exp(log_p)
    return p * (log_p - log_q) - (p - jnp.exp(log_q))

  return Generator(
    name="alpha",
    params={"alpha": 1.0},
    f=lambda u: jax.scipy.special.xlogy(u, u) - u + 1.0,
    f_prime=jnp.log,
    f_double_prime=lambda u: 1.0 / u,
    score_weight=lambda r: r,
    conjugate=jnp.expm1,
    activation=_identity,
    f_at_zero=1.0,
    slope_at_infinity=_INF,
    f_of_log_ratio=lambda log_r: jnp.exp(log_r) * log_r - jnp.expm1(log_r),
    terms=terms,
  )


def _alpha_zero() -> Generator:
  def terms(log_p, log_q):
    q = jnp.exp(log_q)
    return q * (log_q - log_p) + (jnp.exp(log_p) - q)

  def conjugate(t):
    inside = t < 1.0
    return jnp.where(inside, -jnp.log1p(-jnp.where(inside, t, 0.0)), _INF)

  return Generator(
    name="alpha",
    params={"alpha": 0.0},
    f=lambda u: -jnp.log(u) + u - 1.0,
    f_prime=lambda u: 1.0 - 1.0 / u,
    f_double_prime=lambda u: 1.0 / (u * u),
    score_weight=jnp.ones_like,
    conjugate=conjugate,
    activation=_bounded_activation(1.0),
    f_at_zero=_INF,
    slope_at_infinity=1.0,
    f_of_log_ratio=lambda log_r: jnp.expm1(log_r) - log_r,
    terms=terms,
  )


def numerical_conjugate(
  f: Callable[[Array], Array],
  f_prime: Callable[[Array], Array],
  t: Array,
  *,
  slope_at_infinity: float,
  log_u_range: tuple[float, float] = (-40.0, 40.0),
  num_steps: int = 60,
) -> Array:
  """Evaluate f*(t) = sup_{u > 0} t u - f(u) by bisection on f'(u) = t.

  f' is non-decreasing because f is convex, so the maximiser u* solves
  f'(u*) = t; the bisection runs on log u over ``log_u_range``.

  Args:
    f: the generator, elementwise.
    f_prime: its derivative, elementwise.
    t: points at which to evaluate the conjugate, any shape.
    slope_at_infinity: lim f(u) / u; f*(t) = +inf for t above it.
    log_u_range: the search interval for log u*. Where u* lies outside it,
      the result is the value at the nearest end of the interval.
    num_steps: bisection steps; 60 halve the interval below float32
      resolution.

  Returns:
    f*(t), same shape as ``t``.
  """
  t = jnp.asarray(t, dtype=jnp.result_type(t, jnp.float32))
  lo = jnp.full_like(t, log_u_range[0])
  hi = jnp.full_like(t, log_u_range[1])

  def step(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = f_prime(jnp.exp(mid)) < t
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, num_steps, step, (lo, hi))
  u = jnp.exp(0.5 * (lo + hi))
  value = t * u - f(u)
  return jnp.where(t > slope_at_infinity, _INF, value)


def _estimate_limit(values: tuple[float, float]) -> float:
  """Return a limit from two samples on the way to it; +-inf if they diverge."""
  near, far = values
  if not math.isfinite(far):
    return far if not math.isnan(far) else _INF
  if abs(far - near) <= 1e-3 * max(1.0, abs(far)):
    return far
  return math.copysign(_INF, far - near)


def custom_generator(
  f: Callable[[Array], Array],
  *,
  name: str = "custom",
  f_at_zero: float | None = None,
  slope_at_infinity: float | None = None,
  conjugate: Callable[[Array], Array] | None = None,
  activation: Callable[[Array], Array] | None = None,
) -> Generator:
  """Build a generator from a plain convex f with f(1) = 0.

  The derivatives come from autodiff. Limits that are not given are
  estimated numerically: f(0) from f at u = 2^-60 and 2^-100, and
  lim f(u)/u from u = 2^60 and 2^100, each taken as infinite when the two
  samples still differ by more than 1e-3 (relative). Pass the limits
  explicitly when f converges slowly. The conjugate, when not given, is
  computed by bisection (see ``numerical_conjugate``).

  Args:
    f: the generator, elementwise on arrays of ratios u >= 0.
    name: a name for error messages and repr.
    f_at_zero: f(0), the weight of q where p = 0.
    slope_at_infinity: lim_{u -> inf} f(u) / u, the weight of p where q = 0.
    conjugate: f*, when a closed form is known.
    activation: the f-GAN output activation; the default maps R into the
      domain of f*.

  Returns:
    A ``Generator``.

  Raises:
    ValueError: if f(1) is not 0.
  """
  f_one = float(f(jnp.float32(1.0)))
  if abs(f_one) > 1e-6:
    raise ValueError(
      f"generator {name!r} must satisfy f(1) = 0, got f(1) = {f_one}; "
      "subtract f(1) from f"
    )
  if f_at_zero is None:
    f_at_zero = _estimate_limit(
      tuple(float(f(jnp.float32(2.0**k))) for k in (-60, -100))
    )
  if slope_at_infinity is None:
    slope_at_infinity = _estimate_limit(
      tuple(float(f(jnp.float32(2.0**k)) / 2.0**k) for k in (60, 100))
    )

  f_prime = jnp.vectorize(jax.grad(f))
  f_double_prime = jnp.vectorize(jax.grad(jax.grad(f)))
  if conjugate is None:
    conjugate = functools.partial(
      numerical_conjugate, f, f_prime, slope_at_infinity=slope_at_infinity
    )
  if activation is None:
    if math.isfinite(slope_at_infinity):
      activation = _bounded_activation(slope_at_infinity)
    else:
      activation = _identity
  f_of_log_ratio = lambda log_r: f(jnp.exp(log_r))  # noqa: E731
  return Generator(
    name=name,
    params={},
    f=f,
    f_prime=f_prime,
    f_double_prime=f_double_prime,
    score_weight=lambda r: r * r * f_double_prime(r),
    conjugate=conjugate,
    activation=activation,
    f_at_zero=float(f_at_zero),
    slope_at_infinity=float(slope_at_infinity),
    f_of_log_ratio=f_of_log_ratio,
    terms=_default_terms(f_of_log_ratio),
  )


_REGISTRY: dict[str, Callable[..., Generator]] = {
  "kl": _kl,
  "reverse_kl": _reverse_kl,
  "js": _js,
  "total_variation": _total_variation,
  "squared_hellinger": _squared_hellinger,
  "pearson_chi2": _pearson_chi2,
  "neyman_chi2": _neyman_chi2,
  "jeffreys": _jeffreys,
  "softened_reverse_kl": _softened_reverse_kl,
  "alpha": _alpha,
}
_PARAMETERS = {"js": ("beta",), "alpha": ("alpha",)}
_REQUIRED = {"alpha": ("alpha",)}

NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get(name: str, **params: Any) -> Generator:
  """Return the generator registered under ``name``.

  Generators are cached, so equal arguments return the same object, which
  keeps them usable as static arguments of ``jax.jit``.

  Args:
    name: one of ``NAMES``: kl, reverse_kl, js, total_variation,
      squared_hellinger, pearson_chi2, neyman_chi2, jeffreys,
      softened_reverse_kl, alpha.
    **params: ``beta`` for js (default 0.5, in [0, 1]); ``alpha`` for alpha
      (required, any finite real).

  Returns:
    The ``Generator``.

  Raises:
    ValueError: for an unknown name, an unknown or missing parameter, or a
      parameter outside its domain.
  """
  if name not in _REGISTRY:
    raise ValueError(
      f"unknown divergence {name!r}; valid names: {', '.join(NAMES)}"
    )
  allowed = _PARAMETERS.get(name, ())
  unknown = sorted(set(params) - set(allowed))
  if unknown:
    raise ValueError(
      f"divergence {name!r} takes parameters {list(allowed)}, "
      f"got unknown {unknown}"
    )
  missing = [p for p in _REQUIRED.get(name, ()) if p not in params]
  if missing:
    raise ValueError(
      f"divergence {name!r} requires {missing}, e.g. get({name!r}, alpha=0.5)"
    )
  for key, value in params.items():
    if not isinstance(value, int | float) or isinstance(value, bool):
      raise TypeError(
        f"{key} must be a Python float, got {type(value).__name__} {value!r}"
      )
  return _cached_get(
    name, tuple(sorted((k, float(v)) for k, v in params.items()))
  )


@functools.lru_cache(maxsize=256)
def _cached_get(name: str, params: tuple[tuple[str, float], ...]) -> Generator:
  return _REGISTRY[name](**dict(params))


def resolve(divergence: "str | Generator", **params: Any) -> Generator:
  """Return ``divergence`` as a generator, looking names up with ``get``."""
  if isinstance(divergence, Generator):
    if params:
      raise ValueError(
        f"parameters {sorted(params)} cannot be applied to an already built "
        f"{divergence!r}; pass the name instead, e.g. "
        f"({divergence.name!r}, **params)"
      )
    return divergence
  if isinstance(divergence, str):
    return get(divergence, **params)
  raise TypeError(
    "divergence must be a registry name or a Generator, got "
    f"{type(divergence).__name__}"
  )
