"""Divergences between probability distributions, pure and jit-able.

``import divergences`` needs only jax and numpy.
"""

from divergences.categorical import (
  alpha_divergence,
  cauchy_schwarz_divergence,
  chi2_divergence,
  f_divergence,
  jeffreys_divergence,
  js_divergence,
  kl_divergence,
  renyi_divergence,
  squared_hellinger,
  symmetric_cross_entropy,
  total_variation,
)
from divergences.chunked import chunked_divergence
from divergences.fused import fused_linear_divergence
from divergences.generators import NAMES, Generator, custom_generator, get

__all__ = [
  "NAMES",
  "Generator",
  "alpha_divergence",
  "cauchy_schwarz_divergence",
  "chi2_divergence",
  "chunked_divergence",
  "custom_generator",
  "f_divergence",
  "fused_linear_divergence",
  "get",
  "jeffreys_divergence",
  "js_divergence",
  "kl_divergence",
  "renyi_divergence",
  "squared_hellinger",
  "symmetric_cross_entropy",
  "total_variation",
]
