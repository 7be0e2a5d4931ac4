"""Small convolutional classifier for images of any size, e.g. 8x8 to 32x32."""

from collections.abc import Sequence

import jax
from flax import nnx


class CNN(nnx.Module):
  """Convolution blocks, global average pooling and a ReLU dense head.

  Each block is a 3x3 convolution (SAME padding), ReLU and a 2x2 max pool of
  stride 2 (SAME padding, so a side of 1 stays 1). Averaging over the spatial
  axes makes the head independent of the image size, so one definition serves
  8x8 digits, 28x28 MNIST and 32x32 CIFAR images.

  Args:
    in_channels: channels of the input images.
    num_classes: number of logits per example.
    features: output channels of each convolution block, in order.
    hidden: width of the dense hidden layer before the logits.
    rngs: random streams; ``params`` initialises the weights.
  """

  def __init__(
    self,
    *,
    in_channels: int,
    num_classes: int,
    features: Sequence[int] = (32, 64),
    hidden: int = 128,
    rngs: nnx.Rngs,
  ):
    sizes = [in_channels, *features, hidden, num_classes]
    if not features or min(sizes) < 1:
      raise ValueError(
        "CNN needs at least one convolution block and sizes >= 1, got"
        f" in_channels={in_channels}, features={tuple(features)},"
        f" hidden={hidden}, num_classes={num_classes}"
      )
    self.in_channels = in_channels
    channels = [in_channels, *features]
    self.convs = nnx.List(
      [
        nnx.Conv(fan_in, fan_out, kernel_size=(3, 3), rngs=rngs)
        for fan_in, fan_out in zip(channels[:-1], channels[1:], strict=True)
      ]
    )
    self.hidden = nnx.Linear(features[-1], hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Compute logits.

    Args:
      x: ``[batch, height, width, in_channels]`` images.

    Returns:
      ``[batch, num_classes]`` logits.
    """
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(
        "CNN expects images [batch, height, width, channels] with"
        f" {self.in_channels} channels, got shape {x.shape}"
      )
    h = x
    for conv in self.convs:
      h = nnx.relu(conv(h))
      h = nnx.max_pool(h, (2, 2), strides=(2, 2), padding="SAME")
    h = h.mean(axis=(1, 2))
    h = nnx.relu(self.hidden(h))
    return self.head(h)
