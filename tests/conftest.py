"""Test setup: eight CPU devices for the sharding tests, seeded fixtures."""

import os

# The flag must be set before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
  """A NumPy generator with a fixed seed, fresh for every test."""
  return np.random.default_rng(0)
