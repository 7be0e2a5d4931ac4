"""The train state: a pytree of network variables, optimizer state and RNG.

Networks are Flax NNX modules split with ``nnx.split``. Their graph
definitions stay outside the state, so the state contains only arrays and can
be jitted, donated and saved by Orbax as it is.
"""

from collections.abc import Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes.

  Attributes:
    step: int32 ``[]``, the number of updates applied.
    rng: uint32 ``[2]``, a raw PRNG key split once per step.
    params: per trainable network, its ``nnx.Param`` variables.
    model_state: per trainable network, its other variables (e.g. batch
      statistics); empty ``nnx.State`` for networks without any.
    frozen: per frozen network (the teacher of offline distillation), all
      its variables; never updated.
    opt_state: the optax state of ``params``.
  """

  step: Array
  rng: Array
  params: dict[str, nnx.State]
  model_state: dict[str, nnx.State]
  frozen: dict[str, nnx.State]
  opt_state: optax.OptState


def split_networks(
  trainable: Mapping[str, nnx.Module],
  frozen: Mapping[str, nnx.Module] | None = None,
) -> tuple[dict[str, nnx.GraphDef], dict, dict, dict]:
  """Split networks into graph definitions and variable states.

  Args:
    trainable: networks to train, by name, e.g. ``{"student": mlp}``.
    frozen: networks used but never updated, by name.

  Returns:
    ``(graphdefs, params, model_state, frozen_state)``: graph definitions of
    all networks by name, then the three state dicts of ``TrainState``.

  Raises:
    ValueError: a name is both trainable and frozen.
  """
  frozen = dict(frozen or {})
  both = sorted(set(trainable) & set(frozen))
  if both:
    raise ValueError(f"networks {both} cannot be both trainable and frozen")

  graphdefs, params, model_state, frozen_state = {}, {}, {}, {}
  for name, module in trainable.items():
    graphdefs[name], params[name], model_state[name] = nnx.split(
      module, nnx.Param, ...
    )
  for name, module in frozen.items():
    graphdefs[name], frozen_state[name] = nnx.split(module)
  return graphdefs, params, model_state, frozen_state


def create(
  trainable: Mapping[str, nnx.Module],
  optimizer: optax.GradientTransformation,
  *,
  seed: int,
  frozen: Mapping[str, nnx.Module] | None = None,
) -> tuple[dict[str, nnx.GraphDef], TrainState]:
  """Build the initial state of a run from freshly built networks.

  Args:
    trainable: networks to train, by name.
    optimizer: the optax transformation applied to all trainable params.
    seed: seeds the state's RNG key.
    frozen: networks used but never updated, by name.

  Returns:
    ``(graphdefs, state)`` with ``state.step == 0``.
  """
  graphdefs, params, model_state, frozen_state = split_networks(
    trainable, frozen
  )
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    rng=jax.random.PRNGKey(seed),
    params=params,
    model_state=model_state,
    frozen=frozen_state,
    opt_state=optimizer.init(params),
  )
  return graphdefs, state


def merge(
  graphdefs: Mapping[str, nnx.GraphDef], state: TrainState, name: str
) -> nnx.Module:
  """Rebuild network ``name`` from its graph definition and the state."""
  if name in state.frozen:
    return nnx.merge(graphdefs[name], state.frozen[name])
  return nnx.merge(graphdefs[name], state.params[name], state.model_state[name])
