"""A data-parallel mesh: the batch split over axis "data", the state replicated.

One code path serves one device, eight forced CPU devices and many hosts.
"""

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Build a one-axis mesh named "data" over ``devices`` (default: all)."""
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("make_mesh needs at least one device, got none")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Return the sharding that keeps a full copy on every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Return the sharding that splits the leading (batch) axis over "data"."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Raise ValueError unless the global batch splits evenly over the mesh."""
  devices = mesh.shape[DATA_AXIS]
  if batch_size % devices:
    raise ValueError(
      f"batch size {batch_size} is not divisible by the {devices} devices of"
      f" the mesh; choose a multiple of {devices}"
    )


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
  """Assemble this process's batch into global arrays split over "data".

  Args:
    batch: host arrays with the process-local batch as leading axis, e.g.
      ``{"image": [batch, 8, 8, 1], "label": [batch], "mask": [batch]}``.
    mesh: the data-parallel mesh.

  Returns:
    The same dict of ``jax.Array`` with the global batch as leading axis.
  """
  sharding = batch_sharding(mesh)
  arrays = {key: np.asarray(value) for key, value in batch.items()}
  local_size = next(iter(arrays.values())).shape[0]
  check_batch_size(local_size * jax.process_count(), mesh)
  if jax.process_count() == 1:
    # One device_put of the whole dict costs a fraction of one
    # make_array_from_process_local_data call per array.
    return jax.device_put(arrays, sharding)
  return {
    key: jax.make_array_from_process_local_data(sharding, value)
    for key, value in arrays.items()
  }
