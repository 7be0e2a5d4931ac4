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
from divergences.gaussian import (
  gaussian_kl,
  gaussian_kl_diag,
  gaussian_renyi,
  gaussian_renyi_diag,
  gaussian_squared_hellinger,
  gaussian_squared_hellinger_diag,
  gaussian_wasserstein2_squared,
  gaussian_wasserstein2_squared_diag,
)
from divergences.generators import NAMES, Generator, custom_generator, get
from divergences.monte_carlo import monte_carlo_f_divergence

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
  "gaussian_kl",
  "gaussian_kl_diag",
  "gaussian_renyi",
  "gaussian_renyi_diag",
  "gaussian_squared_hellinger",
  "gaussian_squared_hellinger_diag",
  "gaussian_wasserstein2_squared",
  "gaussian_wasserstein2_squared_diag",
  "get",
  "jeffreys_divergence",
  "js_divergence",
  "kl_divergence",
  "monte_carlo_f_divergence",
  "renyi_divergence",
  "squared_hellinger",
  "symmetric_cross_entropy",
  "total_variation",
]
