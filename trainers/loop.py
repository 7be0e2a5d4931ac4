"""Host loops that drive jitted train and eval steps over Grain iterators."""

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

from trainers import metrics, sharding
from trainers.checkpoint import Checkpointer


class NonFiniteLossError(FloatingPointError):
  """A train step produced a NaN or infinite loss."""


def _check_finite(
  step_metrics: Mapping[str, Any], step: int, checkpointer: Checkpointer | None
) -> None:
  """Raise NonFiniteLossError if a network's loss sum is not finite."""
  for name, values in step_metrics.items():
    if not isinstance(values, Mapping) or "loss" not in values:
      continue
    loss = float(values["loss"])
    if math.isfinite(loss):
      continue
    latest = checkpointer.latest_step() if checkpointer else None
    last_good = (
      "none was saved"
      if latest is None
      else f"{checkpointer.path(latest)} (step {latest})"
    )
    raise NonFiniteLossError(
      f"the {name} loss is {loss} at step {step}; the last good checkpoint"
      f" is {last_good}. Lower the learning rate or check the inputs"
    )


def train(
  state: Any,
  step_fn: Callable[[Any, dict], tuple[Any, dict]],
  batches: Iterator[Mapping[str, np.ndarray]],
  mesh: jax.sharding.Mesh,
  *,
  num_steps: int,
  checkpointer: Checkpointer | None = None,
  data_iterator: Any = None,
  on_step: Callable[[int, Any, dict], None] | None = None,
) -> Any:
  """Run ``step_fn`` from ``state.step`` up to ``num_steps``.

  After every step the metrics are fetched to the host and the losses are
  checked. Then the state is checkpointed when due, and once more at the
  end. A non-finite loss stops the run before that step is saved.

  Args:
    state: a ``TrainState`` placed on ``mesh``; it is donated to the step.
    step_fn: from ``distill.jit_train_step``.
    batches: host batches of this process, e.g. a Grain iterator.
    mesh: the data-parallel mesh.
    num_steps: the step count to reach.
    checkpointer: saves the state; None disables checkpoints.
    data_iterator: the Grain iterator behind ``batches``, saved with the
      state so that a resumed run reads the same batches.
    on_step: called as ``on_step(step, state, metrics)`` after each step,
      with the host metrics; the state is valid until the next step.

  Returns:
    The state after ``num_steps`` steps.

  Raises:
    NonFiniteLossError: a loss is NaN or infinite; the message names the
      step and the last checkpoint saved.
  """
  start = int(state.step)
  for step in range(start + 1, num_steps + 1):
    batch = sharding.shard_batch(next(batches), mesh)
    state, step_metrics = step_fn(state, batch)
    step_metrics = jax.device_get(step_metrics)
    _check_finite(step_metrics, step, checkpointer)
    if checkpointer is not None:
      checkpointer.save(step, state, data_iterator)
    if on_step is not None:
      on_step(step, state, step_metrics)

  if checkpointer is not None and checkpointer.latest_step() != num_steps:
    checkpointer.save(num_steps, state, data_iterator, force=True)
  logging.info("Trained to step %d", num_steps)
  return state


def evaluate(
  variables: Any,
  eval_fn: Callable[[Any, dict], dict],
  batches: Iterable[Mapping[str, np.ndarray]],
  mesh: jax.sharding.Mesh,
) -> dict:
  """Sum ``eval_fn`` over all batches; padded examples are left out.

  Args:
    variables: the first argument of ``eval_fn``, placed on ``mesh``.
    eval_fn: from ``distill.jit_eval_step``.
    batches: host batches with a ``mask`` entry.
    mesh: the data-parallel mesh.

  Returns:
    The summed metrics, as NumPy values; see ``metrics.summarize``.
  """
  total = None
  for batch in batches:
    sums = jax.device_get(eval_fn(variables, sharding.shard_batch(batch, mesh)))
    total = sums if total is None else metrics.add(total, sums)
  if total is None:
    raise ValueError("evaluate received no batch")
  return total
