"""Tests for the MLP and CNN classifiers in models.

Shapes and parameter counts are checked with ``jax.eval_shape``, and real
models are built once per module, because eager initialisation compiles one
XLA program per weight shape and that dominates the run time on CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import CNN, MLP

MLP_SIZES = dict(hidden_sizes=(32, 16), num_classes=10)
CNN_SIZES = dict(in_channels=1, num_classes=10, features=(8, 16), hidden=16)


def _num_params(model):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _logits_shape(make_model, input_shape):
  """Shape of ``make_model()(x)`` for ``x`` of ``input_shape``, not computed."""
  images = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  return jax.eval_shape(lambda x: make_model()(x), images).shape


def _assert_finite(tree):
  for leaf in jax.tree.leaves(tree):
    assert jnp.all(jnp.isfinite(leaf))


def _assert_jit_matches_eager(model, images):
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, images):
    return nnx.merge(graphdef, state)(images)

  np.testing.assert_allclose(
    forward(state, images), model(images), rtol=1e-5, atol=1e-6
  )


@pytest.fixture(scope="module")
def mlp():
  return MLP(64, rngs=nnx.Rngs(0), **MLP_SIZES)


@pytest.fixture(scope="module")
def cnn():
  return CNN(rngs=nnx.Rngs(0), **CNN_SIZES)


class TestMLP:
  def test_logits_shape(self):
    shape = _logits_shape(
      lambda: MLP(64, rngs=nnx.Rngs(0), **MLP_SIZES), (5, 8, 8, 1)
    )

    assert shape == (5, 10)

  def test_flat_input_same_logits(self, mlp, rng):
    images = rng.random((5, 8, 8, 1), dtype=np.float32)

    np.testing.assert_allclose(
      mlp(images), mlp(images.reshape(5, 64)), rtol=1e-6
    )

  def test_linear_classifier_without_hidden(self):
    def make_model():
      return MLP(64, hidden_sizes=(), num_classes=3, rngs=nnx.Rngs(0))

    assert _logits_shape(make_model, (2, 64)) == (2, 3)
    assert _num_params(nnx.eval_shape(make_model)) == 64 * 3 + 3

  def test_parameter_count(self):
    model = nnx.eval_shape(
      lambda: MLP(64, hidden_sizes=(256, 256), num_classes=10, rngs=nnx.Rngs(0))
    )

    assert _num_params(model) == (64 + 1) * 256 + 257 * 256 + 257 * 10

  def test_sizes_keyword_only(self):
    with pytest.raises(TypeError):
      MLP(64, (32,), 10, nnx.Rngs(0))  # type: ignore[misc]

  def test_invalid_size_raises(self):
    with pytest.raises(ValueError, match="hidden_sizes=\\(32, 0\\)"):
      MLP(64, hidden_sizes=(32, 0), num_classes=10, rngs=nnx.Rngs(0))

  def test_wrong_input_size_raises(self, mlp, rng):
    with pytest.raises(ValueError, match="64 values per example"):
      mlp(rng.random((2, 7, 7, 1), dtype=np.float32))

  def test_params_and_logits_finite(self, mlp, rng):
    logits = mlp(rng.random((4, 8, 8, 1), dtype=np.float32))

    _assert_finite(nnx.state(mlp, nnx.Param))
    _assert_finite(logits)

  def test_jit_matches_eager(self, mlp, rng):
    images = jnp.asarray(rng.random((4, 8, 8, 1), dtype=np.float32))

    _assert_jit_matches_eager(mlp, images)

  def test_seed_sets_init(self, mlp):
    first = jax.tree.leaves(nnx.state(mlp, nnx.Param))
    second = jax.tree.leaves(
      nnx.state(MLP(64, rngs=nnx.Rngs(0), **MLP_SIZES), nnx.Param)
    )
    other = jax.tree.leaves(
      nnx.state(MLP(64, rngs=nnx.Rngs(1), **MLP_SIZES), nnx.Param)
    )

    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(
      np.array_equal(a, b) for a, b in zip(first, other, strict=True)
    )


class TestCNN:
  @pytest.mark.parametrize(
    "image_shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3), (5, 7, 2)]
  )
  def test_logits_shape(self, image_shape):
    def make_model():
      return CNN(in_channels=image_shape[-1], num_classes=10, rngs=nnx.Rngs(0))

    assert _logits_shape(make_model, (3, *image_shape)) == (3, 10)

  def test_deep_stack_on_small_images(self):
    # SAME max pooling keeps a 1x1 map at 1x1 after more blocks than halvings.
    def make_model():
      return CNN(
        in_channels=1, num_classes=4, features=(8,) * 5, rngs=nnx.Rngs(0)
      )

    assert _logits_shape(make_model, (2, 8, 8, 1)) == (2, 4)

  def test_parameter_count(self):
    model = nnx.eval_shape(
      lambda: CNN(in_channels=1, num_classes=10, rngs=nnx.Rngs(0))
    )
    conv_1 = 3 * 3 * 1 * 32 + 32
    conv_2 = 3 * 3 * 32 * 64 + 64
    dense = 64 * 128 + 128
    head = 128 * 10 + 10

    assert _num_params(model) == conv_1 + conv_2 + dense + head

  def test_sizes_keyword_only(self):
    with pytest.raises(TypeError):
      CNN(1, 10, rngs=nnx.Rngs(0))  # type: ignore[misc]

  def test_invalid_size_raises(self):
    with pytest.raises(ValueError, match="features=\\(\\)"):
      CNN(in_channels=1, num_classes=10, features=(), rngs=nnx.Rngs(0))

  def test_wrong_channels_raises(self, cnn, rng):
    with pytest.raises(ValueError, match="with 1 channels, got shape"):
      cnn(rng.random((2, 8, 8, 3), dtype=np.float32))

  def test_params_and_logits_finite(self, cnn, rng):
    logits = cnn(rng.random((4, 8, 8, 1), dtype=np.float32))

    _assert_finite(nnx.state(cnn, nnx.Param))
    _assert_finite(logits)

  def test_jit_matches_eager(self, cnn, rng):
    images = jnp.asarray(rng.random((4, 8, 8, 1), dtype=np.float32))

    _assert_jit_matches_eager(cnn, images)

  def test_nnx_jit_gradients_finite(self, cnn, rng):
    images = jnp.asarray(rng.random((4, 8, 8, 1), dtype=np.float32))
    labels = jnp.arange(4)

    @nnx.jit
    def loss_grads(model, images, labels):
      def loss_fn(model):
        log_probs = jax.nn.log_softmax(model(images))
        return -jnp.take_along_axis(log_probs, labels[:, None], 1).mean()

      return nnx.grad(loss_fn)(model)

    _assert_finite(loss_grads(cnn, images, labels))
