"""Multilayer perceptron that classifies flattened inputs."""

import math
from collections.abc import Sequence

import jax
from flax import nnx


class MLP(nnx.Module):
  """ReLU multilayer perceptron from flattened inputs to class logits.

  .. math::
    h_0 = \\mathrm{flatten}(x), \\quad
    h_k = \\mathrm{relu}(h_{k-1} W_k + b_k), \\quad
    \\mathrm{logits} = h_K W_{K+1} + b_{K+1}

  With empty ``hidden_sizes`` it is a linear classifier.

  Args:
    in_features: size of one flattened input, e.g. ``8 * 8 * 1`` for the
      digits images.
    hidden_sizes: width of each hidden layer, in order.
    num_classes: number of logits per example.
    rngs: random streams; ``params`` initialises the weights.
  """

  def __init__(
    self,
    in_features: int,
    *,
    hidden_sizes: Sequence[int],
    num_classes: int,
    rngs: nnx.Rngs,
  ):
    sizes = [in_features, *hidden_sizes, num_classes]
    if min(sizes) < 1:
      raise ValueError(
        "in_features, hidden_sizes and num_classes must be >= 1, got"
        f" in_features={in_features}, hidden_sizes={tuple(hidden_sizes)},"
        f" num_classes={num_classes}"
      )
    self.in_features = in_features
    self.layers = nnx.List(
      [
        nnx.Linear(fan_in, fan_out, rngs=rngs)
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)
      ]
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    """Compute logits.

    Args:
      x: ``[batch, ...]`` inputs whose trailing axes contain ``in_features``
        values, e.g. images ``[batch, height, width, channels]``.

    Returns:
      ``[batch, num_classes]`` logits.
    """
    if math.prod(x.shape[1:]) != self.in_features:
      raise ValueError(
        f"MLP expects inputs [batch, ...] with {self.in_features} values per"
        f" example, got shape {x.shape}"
      )
    h = x.reshape(x.shape[0], -1)
    for layer in self.layers[:-1]:
      h = nnx.relu(layer(h))
    return self.layers[-1](h)
