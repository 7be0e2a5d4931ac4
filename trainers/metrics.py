"""Classification metrics as sums with counts, and their exact means.

Train and eval steps return sums over the valid examples of a batch, so that
sums over devices and batches give exact means: accuracy, negative
log-likelihood and the expected calibration error over equal-width bins.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

NUM_BINS = 15

# Keys of ``classification_sums`` that are not averaged by ``summarize``.
_BIN_KEYS = ("bin_count", "bin_confidence", "bin_correct")


def classification_sums(
  logits: Array,
  labels: Array,
  *,
  where: Array | None = None,
  num_bins: int = NUM_BINS,
) -> dict[str, Array]:
  """Sum accuracy, NLL and calibration statistics over the valid examples.

  Predictions are the argmax of the logits and confidences their softmax
  probability. Bin b of ``num_bins`` equal-width bins contains confidences in
  ((b - 1) / num_bins, b / num_bins], as in "On Calibration of Modern Neural
  Networks" (Guo et al., ICML 2017, section 2).

  Args:
    logits: ``[batch, classes]``.
    labels: ``[batch]`` integers in ``[0, classes)``.
    where: ``[batch]`` booleans; False rows (padding) are left out.
    num_bins: number of confidence bins.

  Returns:
    ``count``, ``correct`` and ``nll`` as float32 scalars, and
    ``bin_count``, ``bin_confidence`` and ``bin_correct``, float32
    ``[num_bins]``: per bin, the number of examples, the sum of their
    confidences and the number of correct predictions.
  """
  if where is None:
    where = jnp.ones(labels.shape, dtype=bool)
  valid = where.astype(jnp.float32)
  safe_logits = jnp.where(where[:, None], logits.astype(jnp.float32), 0.0)
  log_probs = jax.nn.log_softmax(safe_logits, axis=-1)

  predictions = jnp.argmax(log_probs, axis=-1)
  correct = (predictions == labels).astype(jnp.float32) * valid
  confidence = jnp.exp(jnp.max(log_probs, axis=-1))
  label_log_probs = jnp.take_along_axis(log_probs, labels[:, None], axis=-1)
  nll = -label_log_probs[:, 0] * valid

  # ceil(c * M) - 1 maps (b/M, (b+1)/M] to bin b; clip keeps c = 0 in bin 0.
  bins = jnp.clip(jnp.ceil(confidence * num_bins) - 1, 0, num_bins - 1)
  one_hot = jax.nn.one_hot(bins.astype(jnp.int32), num_bins) * valid[:, None]
  return {
    "count": jnp.sum(valid),
    "correct": jnp.sum(correct),
    "nll": jnp.sum(nll),
    "bin_count": jnp.sum(one_hot, axis=0),
    "bin_confidence": one_hot.T @ confidence,
    "bin_correct": one_hot.T @ correct,
  }


def expected_calibration_error(
  bin_count: Any, bin_confidence: Any, bin_correct: Any
) -> float:
  """Compute the ECE from per-bin sums.

  .. math::
    ECE = \\sum_b \\frac{|B_b|}{n} |acc(B_b) - conf(B_b)|
        = \\frac{1}{n} \\sum_b |\\sum_{i \\in B_b} 1[\\hat y_i = y_i]
          - \\sum_{i \\in B_b} \\hat p_i|

  Args:
    bin_count: ``[bins]`` examples per bin.
    bin_confidence: ``[bins]`` sums of confidences per bin.
    bin_correct: ``[bins]`` correct predictions per bin.

  Returns:
    The ECE in [0, 1]; 0 when there is no example.
  """
  total = float(np.sum(bin_count))
  if total == 0:
    return 0.0
  gaps = np.abs(np.asarray(bin_correct) - np.asarray(bin_confidence))
  return float(np.sum(gaps) / total)


def add(sums: Any, more: Any) -> Any:
  """Add two metric trees of the same structure, leaf by leaf."""
  return jax.tree.map(lambda a, b: np.asarray(a) + np.asarray(b), sums, more)


def summarize(sums: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """Turn a tree of metric sums into flat means, e.g. ``student/accuracy``.

  In each dict that has a ``count``, every scalar sum ``x`` becomes the mean
  ``x / count``, ``correct`` becomes ``accuracy``, and the bins become
  ``ece``. Other scalars (e.g. ``grad_norm``) are copied. Nested dicts give
  names joined with "/".

  Args:
    sums: dict of float scalars, ``[bins]`` arrays and nested dicts, as
      returned by the train and eval steps (after ``jax.device_get``).
    prefix: prepended to every name.

  Returns:
    A flat dict of Python floats.
  """
  count = float(sums["count"]) if "count" in sums else None
  means = {}
  for key, value in sums.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      means.update(summarize(value, prefix=f"{name}/"))
    elif key in _BIN_KEYS or key == "count":
      continue
    elif count is None:
      means[name] = float(value)
    elif key == "correct":
      means[f"{prefix}accuracy"] = float(value) / max(count, 1.0)
    else:
      means[name] = float(value) / max(count, 1.0)
  if count is not None and "bin_count" in sums:
    means[f"{prefix}ece"] = expected_calibration_error(
      sums["bin_count"], sums["bin_confidence"], sums["bin_correct"]
    )
  return means


def reliability(sums: Mapping[str, Any]) -> dict[str, list[float]]:
  """Return per-bin counts, mean confidences and accuracies for a diagram.

  Args:
    sums: a dict with the bin sums of ``classification_sums``.

  Returns:
    ``{"bin_count", "bin_confidence", "bin_accuracy"}``, lists of length
    ``bins``; empty bins have confidence and accuracy 0.
  """
  count = np.asarray(sums["bin_count"], np.float64)
  safe = np.maximum(count, 1.0)
  return {
    "bin_count": count.tolist(),
    "bin_confidence": (np.asarray(sums["bin_confidence"]) / safe).tolist(),
    "bin_accuracy": (np.asarray(sums["bin_correct"]) / safe).tolist(),
  }
