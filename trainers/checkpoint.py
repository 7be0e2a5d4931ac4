"""Orbax checkpoints of a train state and its data iterator.

Each run keeps its checkpoints in one directory, one subdirectory per step.
A checkpoint contains the ``TrainState`` and, when given, the position of a
Grain iterator, so a resumed run reads the same batches.
"""

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging


class CheckpointError(RuntimeError):
  """A checkpoint cannot be read, or the checkpoint directory is invalid."""


def abstract_like(state: Any, sharding: jax.sharding.Sharding) -> Any:
  """Describe ``state`` as ``ShapeDtypeStruct`` leaves placed on ``sharding``.

  Orbax restores into this target, so the restored arrays get the same
  tree structure, dtypes and sharding.
  """
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state
  )


class Checkpointer:
  """Checkpoints of one run: saved every ``save_every`` steps, the last
  ``max_to_keep`` kept.

  Args:
    directory: where the checkpoints go; created if missing.
    save_every: steps between saves; ``save(..., force=True)`` saves anyway.
    max_to_keep: number of most recent checkpoints kept on disk.

  Raises:
    CheckpointError: ``directory`` exists and is not a directory.
  """

  def __init__(self, directory: str, *, save_every: int, max_to_keep: int):
    if save_every < 1 or max_to_keep < 1:
      raise ValueError(
        "save_every and max_to_keep must be >= 1, got"
        f" save_every={save_every}, max_to_keep={max_to_keep}"
      )
    self.directory = os.path.abspath(directory)
    if os.path.exists(self.directory) and not os.path.isdir(self.directory):
      raise CheckpointError(
        f"checkpoint directory {self.directory!r} exists and is not a"
        " directory; remove it or choose another workdir"
      )
    self.save_every = save_every
    # The interval is applied in ``save``, because the interval option of
    # orbax-checkpoint 0.12.8 also saves the first step given, e.g. step 1.
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      # Synchronous saves: a step reported as saved is on disk, which the
      # error for a NaN loss relies on when it names the last checkpoint.
      enable_async_checkpointing=False,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """Return the step of the newest checkpoint, or None if there is none."""
    return self._manager.latest_step()

  def path(self, step: int) -> str:
    """Return the directory of the checkpoint of ``step``."""
    return os.path.join(self.directory, str(step))

  def save(
    self,
    step: int,
    state: Any,
    data_iterator: grain.DatasetIterator | None = None,
    *,
    force: bool = False,
  ) -> bool:
    """Save ``state`` (and the iterator position) if ``step`` is due.

    A step is due when it is a multiple of ``save_every``, or with ``force``.

    Returns:
      Whether a checkpoint was written.
    """
    if not force and step % self.save_every:
      return False
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    saved = self._manager.save(
      step, args=ocp.args.Composite(**items), force=True
    )
    if saved:
      logging.info("Saved checkpoint %s", self.path(step))
    return saved

  def restore(
    self,
    abstract_state: Any,
    data_iterator: grain.DatasetIterator | None = None,
    *,
    step: int | None = None,
  ) -> Any:
    """Restore the state of ``step`` (default: the newest checkpoint).

    Args:
      abstract_state: the target tree, e.g. from ``abstract_like``.
      data_iterator: if given, its position is set to the saved one.
      step: the checkpoint to read; None selects the newest.

    Returns:
      The restored state.

    Raises:
      CheckpointError: there is no checkpoint, or it cannot be read (a
        partial write, a deleted or corrupted file, another tree structure).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint found in {self.directory!r}")

    path = self.path(step)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    # Orbax and TensorStore raise many types for missing or corrupt files,
    # so every error is reported with the path and what to do.
    except Exception as error:
      raise CheckpointError(
        f"checkpoint {path!r} is unreadable or partial ({error}); delete"
        " that directory to resume from the previous checkpoint, or from"
        " the start if there is none"
      ) from error
    logging.info("Restored checkpoint %s", path)
    return restored["state"]

  def close(self) -> None:
    """Wait for pending writes and release the manager."""
    self._manager.close()
