"""PNG plots of an experiment: reliability diagrams and a method comparison.

Figures are drawn with Matplotlib's Agg backend, so no display is needed.
"""

import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments import results  # noqa: E402


def _label(row: dict) -> str:
  parts = [row["role"], row["method"]]
  if row.get("divergence"):
    parts.append(row["divergence"])
  return " / ".join(parts)


def _pooled_bins(records: Sequence[dict]) -> dict[str, np.ndarray]:
  """Add the calibration bins of several records (the seeds of a group)."""
  keys = ("count", "confidence", "correct")
  total = {key: 0.0 for key in keys}
  for record in records:
    for key in keys:
      total[key] = total[key] + np.asarray(record["calibration_bins"][key])
  return total


def reliability_diagrams(records: Sequence[dict], path: str) -> None:
  """Plot accuracy against confidence per bin, one panel per group.

  Bins are pooled over the seeds of a group. Bars show the accuracy of each
  non-empty bin; the diagonal is perfect calibration.

  Args:
    records: result records with ``calibration_bins`` sums.
    path: the PNG file to write.
  """
  groups: dict[tuple, list[dict]] = {}
  for record in records:
    key = tuple(record.get(field) for field in results.GROUP_FIELDS)
    groups.setdefault(key, []).append(record)

  columns = min(4, len(groups))
  rows = math.ceil(len(groups) / columns)
  figure, axes = plt.subplots(
    rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False
  )
  for axis, (key, members) in zip(axes.flat, groups.items(), strict=False):
    bins = _pooled_bins(members)
    num_bins = len(bins["count"])
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    safe = np.maximum(bins["count"], 1.0)
    accuracy = np.where(bins["count"] > 0, bins["correct"] / safe, 0.0)
    ece = np.sum(np.abs(bins["correct"] - bins["confidence"]))
    ece /= max(float(np.sum(bins["count"])), 1.0)

    axis.bar(
      edges[:-1],
      accuracy,
      width=1.0 / num_bins,
      align="edge",
      edgecolor="black",
      linewidth=0.5,
    )
    axis.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
    axis.set_title(
      _label(dict(zip(results.GROUP_FIELDS, key, strict=True))), fontsize=9
    )
    axis.text(0.04, 0.9, f"pooled ECE {100 * ece:.2f}%", fontsize=8)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
  for axis in axes.flat[len(groups) :]:
    axis.set_visible(False)
  figure.suptitle("Test split, bins pooled over seeds", fontsize=10)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def comparison(rows: Sequence[dict], path: str) -> None:
  """Plot test accuracy and ECE (mean and std over seeds) per group.

  Args:
    rows: from ``results.summarize``.
    path: the PNG file to write.
  """
  labels = [_label(row) for row in rows]
  positions = np.arange(len(rows))
  figure, axes = plt.subplots(1, 2, figsize=(12, 0.4 * len(rows) + 1.5))
  panels = (
    ("test_accuracy", "test accuracy (%)"),
    ("test_ece", "test ECE (%)"),
  )
  for axis, (metric, title) in zip(axes, panels, strict=True):
    means = np.array([100 * row[metric][0] for row in rows])
    stds = np.array([100 * row[metric][1] for row in rows])
    axis.barh(positions, means, xerr=stds, capsize=3)
    axis.set_yticks(positions, labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_title(title)
    if metric == "test_accuracy":
      low = max(0.0, float(np.min(means - stds)) - 2.0)
      axis.set_xlim(low, 100.0)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def write_all(records: Sequence[dict], workdir: str) -> list[str]:
  """Write ``reliability.png`` and ``comparison.png``; return their paths."""
  if not records:
    return []
  reliability_path = os.path.join(workdir, "reliability.png")
  comparison_path = os.path.join(workdir, "comparison.png")
  reliability_diagrams(records, reliability_path)
  comparison(results.summarize(records), comparison_path)
  return [reliability_path, comparison_path]
