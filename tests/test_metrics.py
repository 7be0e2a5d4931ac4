"""Tests of classification metrics: sums, ECE and their exact means."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trainers import metrics

# One compiled program per shape is much faster than eager op-by-op dispatch.
classification_sums = jax.jit(
  metrics.classification_sums, static_argnames="num_bins"
)


def numpy_ece(logits, labels, num_bins=15):
  """ECE with equal-width bins ((b - 1) / M, b / M], written plainly."""
  shifted = logits - logits.max(axis=1, keepdims=True)
  probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
  confidence = probs.max(axis=1)
  correct = (probs.argmax(axis=1) == labels).astype(np.float64)
  ece = 0.0
  for b in range(num_bins):
    low, high = b / num_bins, (b + 1) / num_bins
    in_bin = (confidence > low) & (confidence <= high)
    if b == 0:
      in_bin |= confidence == 0.0
    if in_bin.any():
      gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
      ece += in_bin.mean() * gap
  return ece


def numpy_nll(logits, labels):
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return -log_probs[np.arange(len(labels)), labels].mean()


def random_batch(rng, batch=200, classes=10, scale=3.0):
  logits = rng.normal(size=(batch, classes)) * scale
  labels = rng.integers(0, classes, size=batch)
  return logits.astype(np.float32), labels.astype(np.int32)


class TestClassificationSums:
  def test_ece_matches_numpy(self, rng):
    logits, labels = random_batch(rng)
    sums = classification_sums(jnp.asarray(logits), jnp.asarray(labels))
    ece = metrics.expected_calibration_error(
      sums["bin_count"], sums["bin_confidence"], sums["bin_correct"]
    )
    assert ece == pytest.approx(numpy_ece(logits, labels), abs=1e-5)

  def test_accuracy_and_nll_match_numpy(self, rng):
    logits, labels = random_batch(rng)
    means = metrics.summarize(
      classification_sums(jnp.asarray(logits), jnp.asarray(labels))
    )
    accuracy = np.mean(logits.argmax(axis=1) == labels)
    assert means["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert means["nll"] == pytest.approx(numpy_nll(logits, labels), rel=1e-5)
    assert means["ece"] == pytest.approx(numpy_ece(logits, labels), abs=1e-5)

  def test_masked_rows_are_left_out(self, rng):
    logits, labels = random_batch(rng, batch=64)
    where = np.arange(64) < 40
    # Padding rows hold garbage, including NaN, which must not leak.
    padded = logits.copy()
    padded[~where] = np.nan
    masked = classification_sums(
      jnp.asarray(padded), jnp.asarray(labels), where=jnp.asarray(where)
    )
    valid = classification_sums(
      jnp.asarray(logits[:40]), jnp.asarray(labels[:40])
    )
    for key in valid:
      np.testing.assert_allclose(masked[key], valid[key], rtol=1e-6)
    assert float(masked["count"]) == 40

  def test_shard_sums_equal_whole_batch(self, rng):
    logits, labels = random_batch(rng, batch=96)
    whole = metrics.summarize(
      classification_sums(jnp.asarray(logits), jnp.asarray(labels))
    )
    total = None
    for shard in np.split(np.arange(96), 8):
      sums = classification_sums(
        jnp.asarray(logits[shard]), jnp.asarray(labels[shard])
      )
      total = sums if total is None else metrics.add(total, sums)
    sharded = metrics.summarize(total)
    for key, value in whole.items():
      assert sharded[key] == pytest.approx(value, abs=1e-6), key

  def test_bin_edges(self):
    # Confidence 1/2 of two equal logits: bin 7 is (7/15, 8/15].
    # Confidence 1 of a saturated row: the last bin.
    logits = jnp.array([[0.0, 0.0], [100.0, 0.0]])
    sums = classification_sums(logits, jnp.array([0, 0]))
    counts = np.asarray(sums["bin_count"])
    assert counts[7] == 1
    assert counts[14] == 1
    assert counts.sum() == 2

  def test_perfect_calibration_gives_zero_ece(self):
    # Two rows at confidence 1/2, one right and one wrong.
    logits = jnp.zeros((2, 2))
    sums = classification_sums(logits, jnp.array([0, 1]))
    means = metrics.summarize(sums)
    assert means["ece"] == pytest.approx(0.0, abs=1e-7)
    assert means["accuracy"] == pytest.approx(0.5)


class TestSummarize:
  def test_nested_names_and_means(self):
    sums = {
      "grad_norm": np.float32(2.0),
      "student": {
        "count": np.float32(4.0),
        "loss": np.float32(2.0),
        "correct": np.float32(3.0),
        "bin_count": np.array([4.0, 0.0]),
        "bin_confidence": np.array([2.0, 0.0]),
        "bin_correct": np.array([3.0, 0.0]),
      },
    }
    means = metrics.summarize(sums)
    assert means["grad_norm"] == 2.0
    assert means["student/loss"] == 0.5
    assert means["student/accuracy"] == 0.75
    assert means["student/ece"] == pytest.approx(0.25)
    assert "student/count" not in means

  def test_empty_counts_give_zero(self):
    means = metrics.summarize(
      {
        "count": 0.0,
        "correct": 0.0,
        "bin_count": np.zeros(3),
        "bin_confidence": np.zeros(3),
        "bin_correct": np.zeros(3),
      }
    )
    assert means == {"accuracy": 0.0, "ece": 0.0}

  def test_reliability_per_bin(self):
    bins = metrics.reliability(
      {
        "bin_count": np.array([2.0, 0.0]),
        "bin_confidence": np.array([1.5, 0.0]),
        "bin_correct": np.array([1.0, 0.0]),
      }
    )
    assert bins["bin_confidence"] == [0.75, 0.0]
    assert bins["bin_accuracy"] == [0.5, 0.0]
