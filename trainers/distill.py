"""Train and eval steps for supervised training and knowledge distillation.

A method names its trainable and frozen networks and an objective. The step
built from it is a pure ``step(state, batch) -> (state, metrics)``, jitted
once on a data-parallel mesh with the state donated.
"""

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import divergences
from trainers import losses, metrics, sharding
from trainers.state import TrainState

Array = jax.Array
Batch = Mapping[str, Array]
# (logits by network, labels [batch], mask [batch]) -> per-network dicts of
# per-example terms [batch], each with a "loss" entry.
Objective = Callable[
  [Mapping[str, Array], Array, Array], dict[str, dict[str, Array]]
]

METHODS = ("ce", "kd", "dml", "bdkd")


@dataclasses.dataclass(frozen=True)
class Method:
  """The networks and objective of a train step.

  Attributes:
    name: one of ``METHODS``.
    trainable: names of the networks updated by the step.
    frozen: names of the networks evaluated but never updated.
    objective: per-example loss terms of each trainable network.
  """

  name: str
  trainable: tuple[str, ...]
  frozen: tuple[str, ...]
  objective: Objective


def _check_divergence(name: str) -> None:
  # Looking the name up raises ValueError naming it and the valid names.
  divergences.get(name)


def make_method(
  name: str,
  *,
  network: str = "student",
  divergence: str = "kl",
  temperature: float = 1.0,
  weight: float = 1.0,
  teacher_weight: float = 1.0,
) -> Method:
  """Build a method from its name and constants.

  Args:
    name: "ce" (cross-entropy of one network), "kd" (offline distillation of
      "student" from a frozen "teacher", ``losses.kd_loss``), "dml" (deep
      mutual learning of "teacher" and "student",
      ``losses.mutual_learning_loss``) or "bdkd" (``losses.bdkd_loss``).
    network: the network trained by "ce".
    divergence: registry name of the distillation divergence of "kd" and
      "dml".
    temperature: T of the distillation terms.
    weight: lambda of "kd" (in [0, 1]), or the weight of the student's
      distillation term in "dml" and "bdkd".
    teacher_weight: weight of the teacher's reverse KL in "bdkd".

  Returns:
    The ``Method``.

  Raises:
    ValueError: unknown method or divergence name, T <= 0, or a weight
      outside its range.
  """
  if name not in METHODS:
    raise ValueError(
      f"unknown method {name!r}; valid methods: {', '.join(METHODS)}"
    )
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  if name == "kd" and not 0.0 <= weight <= 1.0:
    raise ValueError(f"weight of kd must be in [0, 1], got {weight}")
  if weight < 0 or teacher_weight < 0:
    raise ValueError(
      f"weights must be >= 0, got weight={weight},"
      f" teacher_weight={teacher_weight}"
    )

  if name == "ce":
    return Method(name, (network,), (), _supervised(network))
  if name == "bdkd":
    objective = _balanced(temperature, weight, teacher_weight)
    return Method(name, ("teacher", "student"), (), objective)

  _check_divergence(divergence)
  if name == "kd":
    objective = _offline(divergence, temperature, weight)
    return Method(name, ("student",), ("teacher",), objective)
  objective = _mutual(divergence, temperature, weight)
  return Method(name, ("teacher", "student"), (), objective)


def _supervised(network: str) -> Objective:
  def objective(logits, labels, where):
    ce = losses.cross_entropy(logits[network], labels, where=where)
    return {network: {"loss": ce, "ce": ce}}

  return objective


def _offline(divergence: str, temperature: float, weight: float) -> Objective:
  def objective(logits, labels, where):
    terms = losses.kd_loss(
      logits["student"],
      logits["teacher"],
      labels,
      divergence=divergence,
      temperature=temperature,
      weight=weight,
      where=where,
    )
    return {"student": terms}

  return objective


def _mutual(divergence: str, temperature: float, weight: float) -> Objective:
  def objective(logits, labels, where):
    return losses.mutual_learning_loss(
      logits["teacher"],
      logits["student"],
      labels,
      divergence=divergence,
      temperature=temperature,
      weight=weight,
      where=where,
    )

  return objective


def _balanced(
  temperature: float, weight: float, teacher_weight: float
) -> Objective:
  def objective(logits, labels, where):
    return losses.bdkd_loss(
      logits["teacher"],
      logits["student"],
      labels,
      temperature=temperature,
      weight=weight,
      teacher_weight=teacher_weight,
      where=where,
    )

  return objective


def _forward(
  graphdefs: Mapping[str, nnx.GraphDef],
  params: Mapping[str, nnx.State],
  state: TrainState,
  images: Array,
  key: Array,
) -> tuple[dict[str, Array], dict[str, nnx.State]]:
  """Run every network; return logits and the trainables' new other state."""
  logits, model_state = {}, {}
  for index, name in enumerate(params):
    model = nnx.merge(graphdefs[name], params[name], state.model_state[name])
    model.train()
    # Networks without a dropout stream are left unchanged.
    nnx.reseed(model, dropout=jax.random.fold_in(key, index))
    logits[name] = model(images)
    model_state[name] = nnx.split(model, nnx.Param, ...)[2]
  for name, frozen_state in state.frozen.items():
    model = nnx.merge(graphdefs[name], frozen_state)
    model.eval()
    logits[name] = jax.lax.stop_gradient(model(images))
  return logits, model_state


def _network_metrics(
  terms: Mapping[str, Array], logits: Array, labels: Array, where: Array
) -> dict[str, Array]:
  sums = {key: jnp.sum(value) for key, value in terms.items()}
  sums.update(metrics.classification_sums(logits, labels, where=where))
  return sums


def make_train_step(
  method: Method,
  graphdefs: Mapping[str, nnx.GraphDef],
  optimizer: optax.GradientTransformation,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """Build the pure train step of ``method``.

  The step minimises the sum over trainable networks of their mean loss
  over the valid examples (``batch["mask"]``) of the global batch.

  Args:
    method: from ``make_method``.
    graphdefs: graph definitions of all networks of the state, by name.
    optimizer: the optax transformation the state was created with.

  Returns:
    ``step(state, batch) -> (state, metrics)`` where ``batch`` is
    ``{"image": [batch, height, width, channels], "label": [batch],
    "mask": [batch]}`` and ``metrics`` has ``grad_norm`` and ``param_norm``
    and, per trainable network, sums over valid examples of every loss term
    and of ``metrics.classification_sums``, with their ``count``.
  """

  def step(state: TrainState, batch: Batch):
    labels, where = batch["label"], batch["mask"]
    count = jnp.maximum(jnp.sum(where.astype(jnp.float32)), 1.0)
    rng, step_key = jax.random.split(state.rng)
    # Padding rows are zeroed, so that whatever they hold (even NaN) cannot
    # reach the gradients through the weights' products with the inputs.
    row_mask = where.reshape(where.shape + (1,) * (batch["image"].ndim - 1))
    images = jnp.where(row_mask, batch["image"], 0.0)

    def loss_fn(params):
      logits, model_state = _forward(graphdefs, params, state, images, step_key)
      terms = method.objective(logits, labels, where)
      total = sum(jnp.sum(t["loss"]) for t in terms.values()) / count
      return total, (logits, terms, model_state)

    grads, (logits, terms, model_state) = jax.grad(loss_fn, has_aux=True)(
      state.params
    )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    step_metrics = {
      "grad_norm": optax.tree.norm(grads),
      "param_norm": optax.tree.norm(params),
    }
    for name, network_terms in terms.items():
      step_metrics[name] = _network_metrics(
        network_terms, logits[name], labels, where
      )
    new_state = state.replace(
      step=state.step + 1,
      rng=rng,
      params=params,
      model_state=model_state,
      opt_state=opt_state,
    )
    return new_state, step_metrics

  return step


def network_variables(state: TrainState, name: str) -> tuple[nnx.State, ...]:
  """Return the variables of network ``name``, as ``make_eval_step`` takes."""
  if name in state.frozen:
    return (state.frozen[name],)
  return (state.params[name], state.model_state[name])


def make_eval_step(
  graphdef: nnx.GraphDef,
) -> Callable[[tuple[nnx.State, ...], Batch], dict]:
  """Build ``evaluate(variables, batch) -> classification sums``.

  The step takes one network's variables (``network_variables``) rather
  than a whole state, so one compiled step serves every run of the same
  architecture. The network runs in eval mode; padded examples (mask
  False) are left out.
  """

  def evaluate(variables: tuple[nnx.State, ...], batch: Batch):
    model = nnx.merge(graphdef, *variables)
    model.eval()
    return metrics.classification_sums(
      model(batch["image"]), batch["label"], where=batch["mask"]
    )

  return evaluate


def jit_train_step(step: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """Jit a train step on ``mesh``: state replicated and donated, batch split.

  The state must be placed with ``sharding.replicated(mesh)`` beforehand.
  """
  state_sharding = sharding.replicated(mesh)
  return jax.jit(
    step,
    in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
    out_shardings=(state_sharding, state_sharding),
    donate_argnums=(0,),
  )


def jit_eval_step(evaluate: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """Jit an eval step on ``mesh``, variables replicated and not donated."""
  replicated = sharding.replicated(mesh)
  return jax.jit(
    evaluate,
    in_shardings=(replicated, sharding.batch_sharding(mesh)),
    out_shardings=replicated,
  )
