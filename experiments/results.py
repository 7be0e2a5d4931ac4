"""Result files of an experiment: records, metric lines and a summary table.

``results.json`` is rewritten whole through a temporary file and a rename,
so an interrupted write leaves the previous version intact.
"""

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# Record fields that identify a group of seeds in the summary table.
GROUP_FIELDS = ("role", "method", "divergence")


def write_json_atomic(path: str, value: Any) -> None:
  """Write ``value`` as JSON to ``path`` through a temporary file and rename."""
  directory = os.path.dirname(os.path.abspath(path))
  handle, temporary = tempfile.mkstemp(
    dir=directory, prefix=".tmp-", suffix=".json"
  )
  try:
    with os.fdopen(handle, "w") as file:
      json.dump(value, file, indent=2)
      file.write("\n")
    # mkstemp creates the file readable by its owner only.
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise


def load_records(path: str) -> list[dict]:
  """Read the records of ``results.json``; a missing file gives [].

  Raises:
    ValueError: the file is not a JSON list of objects.
  """
  if not os.path.exists(path):
    return []
  try:
    with open(path) as file:
      records = json.load(file)
  except (OSError, json.JSONDecodeError) as error:
    raise ValueError(
      f"results file {path!r} is unreadable ({error}); move it away to start"
      " the experiment over"
    ) from error
  if not isinstance(records, list) or not all(
    isinstance(record, dict) for record in records
  ):
    raise ValueError(
      f"results file {path!r} must hold a JSON list of records, got"
      f" {type(records).__name__}; move it away to start over"
    )
  return records


def append_lines(path: str, lines: Iterable[dict]) -> None:
  """Append one JSON object per line to ``path``."""
  with open(path, "a") as file:
    for line in lines:
      file.write(json.dumps(line) + "\n")


def drop_lines_after(path: str, run: str, step: int) -> None:
  """Remove the lines of ``run`` logged after ``step`` from ``path``.

  A run resumed from the checkpoint of ``step`` repeats the later steps, so
  their earlier lines are dropped to keep one line per run and step.
  """
  if not os.path.exists(path):
    return
  with open(path) as file:
    lines = [json.loads(text) for text in file if text.strip()]
  kept = [
    line
    for line in lines
    if not (line.get("run") == run and line.get("step", 0) > step)
  ]
  if len(kept) == len(lines):
    return
  directory = os.path.dirname(os.path.abspath(path))
  handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  with os.fdopen(handle, "w") as file:
    for line in kept:
      file.write(json.dumps(line) + "\n")
  os.replace(temporary, path)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Return the mean and the sample standard deviation (0 for one value)."""
  array = np.asarray(values, np.float64)
  std = float(np.std(array, ddof=1)) if len(array) > 1 else 0.0
  return float(np.mean(array)), std


def summarize(records: Sequence[dict]) -> list[dict]:
  """Group records by role, method and divergence; average over seeds.

  Returns:
    One row per group, in order of first appearance, with the group fields,
    ``seeds`` and ``(mean, std)`` tuples for ``test_accuracy``,
    ``test_ece`` and ``test_nll``.
  """
  groups: dict[tuple, list[dict]] = {}
  for record in records:
    key = tuple(record.get(field) for field in GROUP_FIELDS)
    groups.setdefault(key, []).append(record)

  rows = []
  for key, members in groups.items():
    row = dict(zip(GROUP_FIELDS, key, strict=True))
    row["seeds"] = len(members)
    for metric in ("test_accuracy", "test_ece", "test_nll"):
      row[metric] = _mean_std([member[metric] for member in members])
    rows.append(row)
  return rows


def _cell(mean_std: tuple[float, float], scale: float, digits: int) -> str:
  mean, std = mean_std
  if not math.isfinite(mean):
    return str(mean)
  return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def markdown_table(rows: Sequence[dict]) -> str:
  """Format ``summarize`` rows as a Markdown table (accuracy and ECE in %)."""
  lines = [
    "| role | method | divergence | seeds | test accuracy (%) | test ECE (%)"
    " | test NLL |",
    "|---|---|---|---|---|---|---|",
  ]
  for row in rows:
    lines.append(
      f"| {row['role']} | {row['method']} | {row['divergence'] or '-'} |"
      f" {row['seeds']} | {_cell(row['test_accuracy'], 100, 2)} |"
      f" {_cell(row['test_ece'], 100, 2)} | {_cell(row['test_nll'], 1, 3)} |"
    )
  return "\n".join(lines) + "\n"
