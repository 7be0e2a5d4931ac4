"""Float64 NumPy/SciPy references for the categorical divergences.

Written from the textbook definitions, with the zero-probability limits
spelled out case by case; nothing here calls the library. Every reference
takes float64 log-probabilities ``[..., vocab]``, so that probabilities
far below float64's range (logits of size 1e4) stay exact.
"""

import functools

import numpy as np
from scipy import special

_lse = functools.partial(special.logsumexp, axis=-1)


def log_probs(logits, temperature=1.0):
  """Log-softmax over the last axis in float64; -inf logits stay -inf."""
  logits = np.asarray(logits, dtype=np.float64) / temperature
  return special.log_softmax(logits, axis=-1)


def _both_zero(log_p, log_q):
  return (log_p == -np.inf) & (log_q == -np.inf)


def kl(log_p, log_q):
  p = np.exp(log_p)
  with np.errstate(invalid="ignore"):
    terms = np.where(log_p > -np.inf, p * (log_p - log_q), 0.0)
  return np.sum(terms, axis=-1)


def js(log_p, log_q, beta=0.5):
  p, q = np.exp(log_p), np.exp(log_q)
  m = beta * p + (1.0 - beta) * q
  forward = np.sum(special.rel_entr(p, m), axis=-1)
  backward = np.sum(special.rel_entr(q, m), axis=-1)
  return beta * np.nan_to_num(forward) + (1.0 - beta) * np.nan_to_num(backward)


def total_variation(log_p, log_q):
  return 0.5 * np.sum(np.abs(np.exp(log_p) - np.exp(log_q)), axis=-1)


def squared_hellinger(log_p, log_q):
  return 1.0 - np.sum(np.exp(0.5 * (log_p + log_q)), axis=-1)


def _log_power_sum(log_p, log_q, alpha):
  """log sum_i p_i^alpha q_i^(1 - alpha), dropping entries with p = q = 0."""
  with np.errstate(invalid="ignore"):
    exponent = alpha * log_p + (1.0 - alpha) * log_q
  return _lse(np.where(_both_zero(log_p, log_q), -np.inf, exponent))


def pearson_chi2(log_p, log_q):
  # sum p^2 / q - 1
  return np.exp(_log_power_sum(log_p, log_q, 2.0)) - 1.0


def alpha_divergence(log_p, log_q, a):
  if a == 1.0:
    return kl(log_p, log_q)
  if a == 0.0:
    return kl(log_q, log_p)
  with np.errstate(over="ignore"):
    return (1.0 - np.exp(_log_power_sum(log_p, log_q, a))) / (a * (1.0 - a))


def renyi(log_p, log_q, a):
  if a == 1.0:
    return kl(log_p, log_q)
  return _log_power_sum(log_p, log_q, a) / (a - 1.0)


def cauchy_schwarz(log_p, log_q):
  return _lse(2 * log_p) + _lse(2 * log_q) - 2 * _lse(log_p + log_q)


def jeffreys(log_p, log_q):
  return kl(log_p, log_q) + kl(log_q, log_p)


def _cross_entropy(log_p, log_q):
  p = np.exp(log_p)
  with np.errstate(invalid="ignore"):
    terms = np.where(log_p > -np.inf, -p * log_q, 0.0)
  return np.sum(terms, axis=-1)


def symmetric_cross_entropy(log_p, log_q):
  return 0.5 * (_cross_entropy(log_p, log_q) + _cross_entropy(log_q, log_p))


def softened_reverse_kl(log_p, log_q):
  # 2 KL(M||P) with M = (P + Q) / 2
  log_m = np.logaddexp(log_p, log_q) - np.log(2.0)
  return 2.0 * kl(log_m, log_p)


# Reference D_f(P||Q) for every registry name, written without f.
F_DIVERGENCES = {
  "kl": lambda lp, lq: kl(lp, lq),
  "reverse_kl": lambda lp, lq: kl(lq, lp),
  "js": js,
  "total_variation": total_variation,
  "squared_hellinger": squared_hellinger,
  "pearson_chi2": pearson_chi2,
  "neyman_chi2": lambda lp, lq: pearson_chi2(lq, lp),
  "jeffreys": jeffreys,
  "softened_reverse_kl": softened_reverse_kl,
  "alpha": lambda lp, lq, alpha: alpha_divergence(lp, lq, alpha),
}
