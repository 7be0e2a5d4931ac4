"""Tests of the package boundary: what ``import divergences`` loads."""

import subprocess
import sys

HEAVY = ("flax", "optax", "orbax", "tensorflow", "grain", "scipy", "ott")


def test_import_loads_only_jax_and_numpy():
  code = (
    "import sys, divergences; "
    "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
  )
  loaded = subprocess.run(
    [sys.executable, "-c", code], check=True, capture_output=True, text=True
  ).stdout.split()
  for package in HEAVY:
    assert package not in loaded, package
  for package in ("trainers", "models", "experiments"):
    assert package not in loaded, package
