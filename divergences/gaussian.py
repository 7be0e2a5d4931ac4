"""Closed-form divergences between Gaussian distributions.

Diagonal Gaussians are given by mean and standard deviation (``scale``), full
Gaussians by mean and covariance. Every function returns D(P||Q) per batch row.
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  "gaussian_kl",
  "gaussian_kl_diag",
  "gaussian_renyi",
  "gaussian_renyi_diag",
  "gaussian_squared_hellinger",
  "gaussian_squared_hellinger_diag",
  "gaussian_wasserstein2_squared",
  "gaussian_wasserstein2_squared_diag",
]


# Input checks and preparation.


def _as_compute_dtype(**arrays):
  """Converts the arrays to float32, or to float64 when any is float64."""
  for name, value in arrays.items():
    dtype = jnp.result_type(value)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"{name} must have a floating dtype, got {dtype}")
  dtype = jnp.promote_types(jnp.result_type(*arrays.values()), jnp.float32)
  return [jnp.asarray(value, dtype) for value in arrays.values()]


def _check_alpha(alpha):
  """Returns alpha as a Python float after checking that it is in (0, inf)."""
  try:
    alpha = float(alpha)
  except TypeError as error:
    raise TypeError(
      "alpha must be a concrete number, not a traced value. Pass it as a "
      "static argument under jax.jit"
    ) from error
  if not (np.isfinite(alpha) and alpha > 0):
    raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
  return alpha


def _prepare_diag(p_mean, p_scale, q_mean, q_scale):
  """Checks shapes and broadcasts the four diagonal parameters together."""
  arrays = _as_compute_dtype(
    p_mean=p_mean, p_scale=p_scale, q_mean=q_mean, q_scale=q_scale
  )
  p_mean, p_scale, q_mean, q_scale = arrays
  if p_mean.ndim == 0 or q_mean.ndim == 0:
    raise ValueError(
      "p_mean and q_mean must have shape [..., dim], got shapes "
      f"{p_mean.shape} and {q_mean.shape}"
    )
  if p_mean.shape[-1] != q_mean.shape[-1]:
    raise ValueError(
      "p_mean and q_mean must have the same dim (last axis), got shapes "
      f"{p_mean.shape} and {q_mean.shape}"
    )
  shapes = [array.shape for array in arrays]
  try:
    shape = jnp.broadcast_shapes(*shapes)
  except ValueError as error:
    raise ValueError(
      "p_mean, p_scale, q_mean and q_scale must broadcast to one shape "
      f"[..., dim], got shapes {shapes}"
    ) from error
  if shape[-1] != p_mean.shape[-1]:
    raise ValueError(
      f"p_scale and q_scale must broadcast to dim {p_mean.shape[-1]}, got "
      f"shapes {p_scale.shape} and {q_scale.shape}"
    )
  return [jnp.broadcast_to(array, shape) for array in arrays]


def _prepare_full(p_mean, p_cov, q_mean, q_cov):
  """Checks shapes and broadcasts the batch axes of the four parameters."""
  arrays = _as_compute_dtype(
    p_mean=p_mean, p_cov=p_cov, q_mean=q_mean, q_cov=q_cov
  )
  p_mean, p_cov, q_mean, q_cov = arrays
  for mean, cov, side in ((p_mean, p_cov, "p"), (q_mean, q_cov, "q")):
    dim = mean.shape[-1] if mean.ndim else None
    if dim is None or cov.ndim < 2 or cov.shape[-2:] != (dim, dim):
      raise ValueError(
        f"{side}_mean must have shape [..., dim] and {side}_cov shape "
        f"[..., dim, dim], got shapes {mean.shape} and {cov.shape}"
      )
  if p_mean.shape[-1] != q_mean.shape[-1]:
    raise ValueError(
      "p_mean and q_mean must have the same dim (last axis), got shapes "
      f"{p_mean.shape} and {q_mean.shape}"
    )
  batch_shapes = [p_mean.shape[:-1], p_cov.shape[:-2]]
  batch_shapes += [q_mean.shape[:-1], q_cov.shape[:-2]]
  try:
    batch = jnp.broadcast_shapes(*batch_shapes)
  except ValueError as error:
    raise ValueError(
      "the batch axes of p_mean, p_cov, q_mean and q_cov must broadcast "
      f"together, got batch shapes {batch_shapes}"
    ) from error
  dim = p_mean.shape[-1]
  return (
    jnp.broadcast_to(p_mean, batch + (dim,)),
    jnp.broadcast_to(p_cov, batch + (dim, dim)),
    jnp.broadcast_to(q_mean, batch + (dim,)),
    jnp.broadcast_to(q_cov, batch + (dim, dim)),
  )


# Linear algebra helpers on Cholesky factors.


def _log_det(chol):
  """Returns log det(L L^T) from the lower Cholesky factor L."""
  diagonal = jnp.diagonal(chol, axis1=-2, axis2=-1)
  return 2.0 * jnp.sum(jnp.log(diagonal), axis=-1)


def _solve_lower(chol, rhs):
  """Returns L^{-1} rhs for a lower-triangular L and rhs [..., dim, k]."""
  return jax.lax.linalg.triangular_solve(chol, rhs, left_side=True, lower=True)


def _mahalanobis_squared(chol, diff):
  """Returns diff^T (L L^T)^{-1} diff for diff [..., dim]."""
  whitened = _solve_lower(chol, diff[..., None])[..., 0]
  return jnp.sum(jnp.square(whitened), axis=-1)


@jax.custom_jvp
def _trace_sqrtm_psd(matrix):
  """Returns tr(matrix^{1/2}) for symmetric positive semi-definite matrices.

  The JVP is 0.5 tr(matrix^{-1/2} dM), computed in the eigenbasis without
  the 1 / (w_i - w_j) factors of the eigenvector derivative, so gradients stay
  finite when eigenvalues repeat.
  """
  eigenvalues = jnp.linalg.eigvalsh(matrix)
  return jnp.sum(jnp.sqrt(jnp.maximum(eigenvalues, 0.0)), axis=-1)


@_trace_sqrtm_psd.defjvp
def _trace_sqrtm_psd_jvp(primals, tangents):
  (matrix,), (tangent,) = primals, tangents
  eigenvalues, eigenvectors = jnp.linalg.eigh(matrix)

  # NOTE: the derivative of sqrt at a zero eigenvalue is infinite. Such
  # directions get a zero JVP here, which is only right for SPD inputs.
  positive = eigenvalues > 0
  root = jnp.sqrt(jnp.where(positive, eigenvalues, 1.0))
  value = jnp.sum(jnp.where(positive, root, 0.0), axis=-1)
  inverse_root = jnp.where(positive, 1.0 / root, 0.0)

  inverse_sqrtm = jnp.matmul(
    eigenvectors * inverse_root[..., None, :],
    jnp.swapaxes(eigenvectors, -1, -2),
  )
  tangent_out = 0.5 * jnp.sum(inverse_sqrtm * tangent, axis=(-2, -1))
  return value, tangent_out


# Diagonal Gaussians.


def gaussian_kl_diag(p_mean, p_scale, q_mean, q_scale):
  r"""Computes KL(P||Q) between Gaussians with diagonal covariances.

  .. math::
    \mathrm{KL}(P\|Q) = \frac12 \sum_i \Big(\frac{\sigma_{p,i}^2}
    {\sigma_{q,i}^2} - 1 - \log\frac{\sigma_{p,i}^2}{\sigma_{q,i}^2}
    + \frac{(\mu_{p,i} - \mu_{q,i})^2}{\sigma_{q,i}^2}\Big)

  The four arguments broadcast together, and the means must share the last
  axis.
  Inputs of any float dtype are computed in float32, or in float64 when any
  input is float64.

  Args:
    p_mean: mean of P, shape ``[..., dim]``.
    p_scale: standard deviation of P (not the variance), > 0, shape
      ``[..., dim]``.
    q_mean: mean of Q, shape ``[..., dim]``.
    q_scale: standard deviation of Q, > 0, shape ``[..., dim]``.

  Returns:
    KL(P||Q) in nats, shape ``[...]``.

  Raises:
    TypeError: an argument has a non-float dtype.
    ValueError: the shapes do not broadcast or the dims differ.
  """
  p_mean, p_scale, q_mean, q_scale = _prepare_diag(
    p_mean, p_scale, q_mean, q_scale
  )
  log_scale_ratio = jnp.log(p_scale) - jnp.log(q_scale)
  standardized_diff = (p_mean - q_mean) / q_scale

  # expm1(2 l) - 2 l equals ratio - 1 - log(ratio) for the variance ratio,
  # without cancellation when the two scales are nearly equal.
  variance_term = jnp.expm1(2.0 * log_scale_ratio) - 2.0 * log_scale_ratio
  per_dim = 0.5 * (variance_term + jnp.square(standardized_diff))
  return jnp.sum(per_dim, axis=-1)


def _renyi_diag(p_mean, p_scale, q_mean, q_scale, alpha):
  """Returns the Renyi divergence for prepared arrays and alpha != 1."""
  p_variance, q_variance = jnp.square(p_scale), jnp.square(q_scale)
  mixed_variance = alpha * q_variance + (1.0 - alpha) * p_variance

  # Only alpha > 1 can make the mixed variance non-positive. The double
  # where keeps gradients finite on the rows that return +inf.
  finite = mixed_variance > 0
  mixed_variance = jnp.where(finite, mixed_variance, 1.0)

  mean_term = 0.5 * alpha * jnp.square(p_mean - q_mean) / mixed_variance
  log_term = (
    jnp.log(mixed_variance)
    - 2.0 * (1.0 - alpha) * jnp.log(p_scale)
    - 2.0 * alpha * jnp.log(q_scale)
  )
  value = jnp.sum(mean_term + log_term / (2.0 * (1.0 - alpha)), axis=-1)
  return jnp.where(jnp.all(finite, axis=-1), value, jnp.inf)


def gaussian_renyi_diag(p_mean, p_scale, q_mean, q_scale, *, alpha):
  r"""Computes the Renyi divergence of order alpha between diagonal Gaussians.

  .. math::
    D_\alpha(P\|Q) = \sum_i \frac{\alpha (\mu_{p,i} - \mu_{q,i})^2}
    {2 \sigma_{\alpha,i}^2} - \frac{1}{2(\alpha - 1)}
    \log\frac{\sigma_{\alpha,i}^2}{\sigma_{p,i}^{2(1-\alpha)}
    \sigma_{q,i}^{2\alpha}},
    \quad \sigma_{\alpha,i}^2 = \alpha \sigma_{q,i}^2
    + (1 - \alpha) \sigma_{p,i}^2

  This is :math:`\frac{1}{\alpha - 1} \log \int p^\alpha q^{1-\alpha}`. It is
  finite only where every :math:`\sigma_{\alpha,i}^2 > 0`, which can fail for
  alpha > 1, and those rows return +inf. alpha = 1 returns the KL divergence,
  the limit of the formula. Formula: M. Gil, F. Alajaji and T. Linder, "Renyi
  divergence measures for commonly used univariate continuous distributions",
  Information Sciences 249 (2013), multivariate Gaussian case.

  Args:
    p_mean: mean of P, shape ``[..., dim]``.
    p_scale: standard deviation of P, > 0, shape ``[..., dim]``.
    q_mean: mean of Q, shape ``[..., dim]``.
    q_scale: standard deviation of Q, > 0, shape ``[..., dim]``.
    alpha: order, a concrete number > 0 (static under ``jax.jit``).

  Returns:
    D_alpha(P||Q) in nats, shape ``[...]``.

  Raises:
    TypeError: an argument has a non-float dtype, or alpha is traced.
    ValueError: alpha <= 0, or the shapes do not broadcast.
  """
  alpha = _check_alpha(alpha)
  if alpha == 1.0:
    return gaussian_kl_diag(p_mean, p_scale, q_mean, q_scale)
  arrays = _prepare_diag(p_mean, p_scale, q_mean, q_scale)
  return _renyi_diag(*arrays, alpha)


def gaussian_squared_hellinger_diag(p_mean, p_scale, q_mean, q_scale):
  r"""Computes the squared Hellinger distance between diagonal Gaussians.

  .. math::
    H^2(P, Q) = 1 - \int \sqrt{p q} = 1 - \exp(-D_B),
    \quad D_B = \tfrac12 D_{1/2}(P\|Q)

  The Bhattacharyya distance :math:`D_B` is half the Renyi divergence of
  order 1/2. This convention puts H^2 in [0, 1] and matches the
  f-divergence with generator :math:`(\sqrt{u} - 1)^2 / 2`.

  Args:
    p_mean: mean of P, shape ``[..., dim]``.
    p_scale: standard deviation of P, > 0, shape ``[..., dim]``.
    q_mean: mean of Q, shape ``[..., dim]``.
    q_scale: standard deviation of Q, > 0, shape ``[..., dim]``.

  Returns:
    H^2(P, Q), shape ``[...]``, symmetric in P and Q.

  Raises:
    TypeError: an argument has a non-float dtype.
    ValueError: the shapes do not broadcast or the dims differ.
  """
  arrays = _prepare_diag(p_mean, p_scale, q_mean, q_scale)
  bhattacharyya = 0.5 * _renyi_diag(*arrays, 0.5)
  return -jnp.expm1(-bhattacharyya)


def gaussian_wasserstein2_squared_diag(p_mean, p_scale, q_mean, q_scale):
  r"""Computes the squared 2-Wasserstein distance between diagonal Gaussians.

  .. math::
    W_2^2(P, Q) = \|\mu_p - \mu_q\|^2 + \|\sigma_p - \sigma_q\|^2

  This is the full-covariance formula for commuting covariances.

  Args:
    p_mean: mean of P, shape ``[..., dim]``.
    p_scale: standard deviation of P, >= 0, shape ``[..., dim]``.
    q_mean: mean of Q, shape ``[..., dim]``.
    q_scale: standard deviation of Q, >= 0, shape ``[..., dim]``.

  Returns:
    The squared distance W_2^2 (not W_2), shape ``[...]``.

  Raises:
    TypeError: an argument has a non-float dtype.
    ValueError: the shapes do not broadcast or the dims differ.
  """
  p_mean, p_scale, q_mean, q_scale = _prepare_diag(
    p_mean, p_scale, q_mean, q_scale
  )
  per_dim = jnp.square(p_mean - q_mean) + jnp.square(p_scale - q_scale)
  return jnp.sum(per_dim, axis=-1)


# Full-covariance Gaussians.


def gaussian_kl(p_mean, p_cov, q_mean, q_cov):
  r"""Computes KL(P||Q) between Gaussians with full covariances.

  .. math::
    \mathrm{KL}(P\|Q) = \frac12 \Big(\mathrm{tr}(\Sigma_q^{-1} \Sigma_p)
    - d + (\mu_p - \mu_q)^\top \Sigma_q^{-1} (\mu_p - \mu_q)
    + \log\frac{\det \Sigma_q}{\det \Sigma_p}\Big)

  Traces, solves and log-determinants use Cholesky factors. The batch axes
  of the four arguments broadcast together. Inputs of any float dtype are
  computed in float32, or in float64 when any input is float64.

  Args:
    p_mean: mean of P, shape ``[..., dim]``.
    p_cov: covariance of P, symmetric positive definite, shape
      ``[..., dim, dim]``.
    q_mean: mean of Q, shape ``[..., dim]``.
    q_cov: covariance of Q, symmetric positive definite, shape
      ``[..., dim, dim]``.

  Returns:
    KL(P||Q) in nats, shape ``[...]``. A covariance that is not positive
    definite gives NaN.

  Raises:
    TypeError: an argument has a non-float dtype.
    ValueError: the shapes do not match or do not broadcast.
  """
  p_mean, p_cov, q_mean, q_cov = _prepare_full(p_mean, p_cov, q_mean, q_cov)
  p_chol = jnp.linalg.cholesky(p_cov)
  q_chol = jnp.linalg.cholesky(q_cov)

  # tr(Sq^{-1} Sp) = ||Lq^{-1} Lp||_F^2.
  trace_term = jnp.sum(jnp.square(_solve_lower(q_chol, p_chol)), (-2, -1))
  mean_term = _mahalanobis_squared(q_chol, p_mean - q_mean)
  log_det_term = _log_det(q_chol) - _log_det(p_chol)
  dim = p_mean.shape[-1]
  return 0.5 * (trace_term - dim + mean_term + log_det_term)


def _renyi_full(p_mean, p_cov, q_mean, q_cov, alpha):
  """Returns the Renyi divergence for prepared arrays and alpha != 1."""
  mixed_cov = alpha * q_cov + (1.0 - alpha) * p_cov
  finite = jnp.ones(mixed_cov.shape[:-2], dtype=bool)
  if alpha > 1.0:
    # A failed Cholesky factor contains NaN. Rows whose mixed covariance is
    # not positive definite factor the identity instead (double where).
    failed_chol = jnp.isnan(jnp.linalg.cholesky(mixed_cov))
    finite = ~jnp.any(failed_chol, axis=(-2, -1))
    identity = jnp.eye(mixed_cov.shape[-1], dtype=mixed_cov.dtype)
    mixed_cov = jnp.where(finite[..., None, None], mixed_cov, identity)

  mixed_chol = jnp.linalg.cholesky(mixed_cov)
  mean_term = 0.5 * alpha * _mahalanobis_squared(mixed_chol, p_mean - q_mean)
  log_term = (
    _log_det(mixed_chol)
    - (1.0 - alpha) * _log_det(jnp.linalg.cholesky(p_cov))
    - alpha * _log_det(jnp.linalg.cholesky(q_cov))
  )
  value = mean_term + log_term / (2.0 * (1.0 - alpha))
  return jnp.where(finite, value, jnp.inf)


def gaussian_renyi(p_mean, p_cov, q_mean, q_cov, *, alpha):
  r"""Computes the Renyi divergence of order alpha between full Gaussians.

  .. math::
    D_\alpha(P\|Q) = \frac{\alpha}{2} (\mu_p - \mu_q)^\top \Sigma_\alpha^{-1}
    (\mu_p - \mu_q) - \frac{1}{2(\alpha - 1)} \log\frac{\det \Sigma_\alpha}
    {(\det \Sigma_p)^{1-\alpha} (\det \Sigma_q)^\alpha},
    \quad \Sigma_\alpha = \alpha \Sigma_q + (1 - \alpha) \Sigma_p

  This is :math:`\frac{1}{\alpha - 1} \log \int p^\alpha q^{1-\alpha}`. It is
  finite only where :math:`\Sigma_\alpha` is positive definite, which can
  fail for alpha > 1, and those rows return +inf. alpha = 1 returns the KL
  divergence, the limit of the formula. Formula: M. Gil, F. Alajaji and
  T. Linder, "Renyi divergence measures for commonly used univariate
  continuous distributions", Information Sciences 249 (2013), multivariate
  Gaussian case.

  Args:
    p_mean: mean of P, shape ``[..., dim]``.
    p_cov: covariance of P, symmetric positive definite, shape
      ``[..., dim, dim]``.
    q_mean: mean of Q, shape ``[..., dim]``.
    q_cov: covariance of Q, symmetric positive definite, shape
      ``[..., dim, dim]``.
    alpha: order, a concrete number > 0 (static under ``jax.jit``).

  Returns:
    D_alpha(P||Q) in nats, shape ``[...]``.

  Raises:
    TypeError: an argument has a non-float dtype, or alpha is traced.
    ValueError: alpha <= 0, or the shapes do not match or broadcast.
  """
  alpha = _check_alpha(alpha)
  if alpha == 1.0:
    return gaussian_kl(p_mean, p_cov, q_mean, q_cov)
  arrays = _prepare_full(p_mean, p_cov, q_mean, q_cov)
  return _renyi_full(*arrays, alpha)


def gaussian_squared_hellinger(p_mean, p_cov, q_mean, q_cov):
  r"""Computes the squared Hellinger distance between full Gaussians.

  .. math::
    H^2(P, Q) = 1 - \int \sqrt{p q} = 1 - \exp(-D_B),
    \quad D_B = \tfrac18 \Delta\mu^\top \bar\Sigma^{-1} \Delta\mu
    + \tfrac12 \log\frac{\det \bar\Sigma}{\sqrt{\det\Sigma_p \det\Sigma_q}}

  with :math:`\bar\Sigma = (\Sigma_p + \Sigma_q) / 2`. The Bhattacharyya
  distance :math:`D_B` is half the Renyi divergence of order 1/2. This
  convention puts H^2 in [0, 1] and matches the f-divergence with generator
  :math:`(\sqrt{u} - 1)^2 / 2`.

  Args:
    p_mean: mean of P, shape ``[..., dim]``.
    p_cov: covariance of P, symmetric positive definite, shape
      ``[..., dim, dim]``.
    q_mean: mean of Q, shape ``[..., dim]``.
    q_cov: covariance of Q, symmetric positive definite, shape
      ``[..., dim, dim]``.

  Returns:
    H^2(P, Q), shape ``[...]``, symmetric in P and Q.

  Raises:
    TypeError: an argument has a non-float dtype.
    ValueError: the shapes do not match or do not broadcast.
  """
  arrays = _prepare_full(p_mean, p_cov, q_mean, q_cov)
  bhattacharyya = 0.5 * _renyi_full(*arrays, 0.5)
  return -jnp.expm1(-bhattacharyya)


def gaussian_wasserstein2_squared(p_mean, p_cov, q_mean, q_cov):
  r"""Computes the squared 2-Wasserstein distance between full Gaussians.

  .. math::
    W_2^2(P, Q) = \|\mu_p - \mu_q\|^2 + \mathrm{tr}\big(\Sigma_p + \Sigma_q
    - 2 (\Sigma_q^{1/2} \Sigma_p \Sigma_q^{1/2})^{1/2}\big)

  The trace of the matrix square root is computed from the eigenvalues of
  :math:`L_q^\top \Sigma_p L_q` with :math:`\Sigma_q = L_q L_q^\top`, a matrix
  similar to :math:`\Sigma_q^{1/2} \Sigma_p \Sigma_q^{1/2}`, so only one
  symmetric eigendecomposition is needed. Its gradient stays finite when
  eigenvalues repeat. Rounding below zero is clipped to 0. Formula:
  C. R. Givens and R. M. Shortt, "A class of Wasserstein metrics for
  probability distributions", Michigan Math. J. 31 (1984).

  Args:
    p_mean: mean of P, shape ``[..., dim]``.
    p_cov: covariance of P, symmetric positive definite, shape
      ``[..., dim, dim]``.
    q_mean: mean of Q, shape ``[..., dim]``.
    q_cov: covariance of Q, symmetric positive definite, shape
      ``[..., dim, dim]``.

  Returns:
    The squared distance W_2^2 (not W_2), shape ``[...]``.

  Raises:
    TypeError: an argument has a non-float dtype.
    ValueError: the shapes do not match or do not broadcast.
  """
  p_mean, p_cov, q_mean, q_cov = _prepare_full(p_mean, p_cov, q_mean, q_cov)
  q_chol = jnp.linalg.cholesky(q_cov)
  similar = jnp.matmul(jnp.swapaxes(q_chol, -1, -2), p_cov @ q_chol)
  similar = 0.5 * (similar + jnp.swapaxes(similar, -1, -2))

  trace_term = (
    jnp.trace(p_cov, axis1=-2, axis2=-1)
    + jnp.trace(q_cov, axis1=-2, axis2=-1)
    - 2.0 * _trace_sqrtm_psd(similar)
  )
  mean_term = jnp.sum(jnp.square(p_mean - q_mean), axis=-1)
  return jnp.maximum(mean_term + trace_term, 0.0)
