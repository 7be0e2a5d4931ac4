"""Tests of distillation losses, train steps, sharding and checkpoints."""

import functools
import math
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import divergences
from models.mlp import MLP
from trainers import distill, loop, losses, sharding
from trainers import state as state_lib
from trainers.checkpoint import Checkpointer, CheckpointError, abstract_like

BATCH = 16
CLASSES = 4
IMAGE_SHAPE = (4, 4, 1)


def tiny_mlp(seed: int) -> MLP:
  return MLP(16, hidden_sizes=(8,), num_classes=CLASSES, rngs=nnx.Rngs(seed))


def make_batch(index: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng([seed, index])
  return {
    "image": rng.normal(size=(BATCH, *IMAGE_SHAPE)).astype(np.float32),
    "label": rng.integers(0, CLASSES, size=BATCH).astype(np.int32),
    "mask": np.ones(BATCH, dtype=bool),
  }


def batch_iterator() -> grain.DatasetIterator:
  options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
  dataset = grain.MapDataset.range(10_000).map(make_batch)
  return iter(dataset.to_iter_dataset(options))


def softmax(x):
  e = np.exp(x - np.max(x, axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def entropy(p):
  return -np.sum(p * np.log(p), axis=-1)


OPTIMIZER = optax.adam(1e-2)
KD_METHOD = distill.make_method("kd", divergence="kl", temperature=2.0)


def kd_state(mesh, seed=0):
  graphdefs, state = state_lib.create(
    {"student": tiny_mlp(seed)},
    OPTIMIZER,
    seed=seed,
    frozen={"teacher": tiny_mlp(seed + 100)},
  )
  return graphdefs, jax.device_put(state, sharding.replicated(mesh))


@pytest.fixture(scope="module")
def mesh8():
  assert jax.device_count() == 8, "conftest must force 8 CPU devices"
  return sharding.make_mesh()


@pytest.fixture(scope="module")
def kd_step(mesh8):
  """The KD train step jitted once on 8 devices, shared by the tests."""
  graphdefs, _ = kd_state(mesh8)
  step = distill.make_train_step(KD_METHOD, graphdefs, OPTIMIZER)
  return distill.jit_train_step(step, mesh8)


class TestKdLoss:
  def test_hand_computed_value(self):
    # T^2 KL(softmax([1, 0]) || [1/2, 1/2]) with T = 2.
    teacher = jnp.array([[2.0, 0.0]])
    student = jnp.array([[0.0, 0.0]])
    value = losses.distillation_divergence(teacher, student, temperature=2.0)
    assert float(value[0]) == pytest.approx(0.443776, abs=1e-6)

  def test_hand_computed_gradient(self):
    teacher = jnp.array([[2.0, 0.0]])

    def loss(student):
      return losses.distillation_divergence(teacher, student, temperature=2.0)[
        0
      ]

    grad = jax.jit(jax.grad(loss))(jnp.array([[0.0, 0.0]]))
    p_teacher = softmax(np.array([1.0, 0.0]))
    expected = 2.0 * (np.array([0.5, 0.5]) - p_teacher)
    np.testing.assert_allclose(grad[0], expected, atol=1e-6)

  def test_no_gradient_to_teacher(self):
    student = jnp.array([[0.3, -0.2, 0.1]])

    def loss(teacher):
      return losses.distillation_divergence(teacher, student, temperature=3.0)[
        0
      ]

    grad = jax.jit(jax.grad(loss))(jnp.array([[1.0, 0.0, -1.0]]))
    np.testing.assert_array_equal(grad, 0.0)

  def test_weight_mixes_ce_and_distill(self, rng):
    student = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    teacher = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    labels = jnp.array([0, 1, 2, 0, 1])
    kd_loss = functools.partial(
      losses.kd_loss, divergence="js", temperature=4.0, weight=0.3
    )
    terms = jax.jit(kd_loss)(student, teacher, labels)
    expected = 0.7 * terms["ce"] + 0.3 * terms["distill"]
    np.testing.assert_allclose(terms["loss"], expected, rtol=1e-6)
    expected_distill = 16.0 * divergences.js_divergence(
      teacher, student, temperature=4.0
    )
    np.testing.assert_allclose(terms["distill"], expected_distill, rtol=1e-6)

  def test_masked_rows_are_zero_with_finite_gradient(self):
    student = jnp.array([[0.0, 1.0], [jnp.nan, 0.0]])
    teacher = jnp.array([[1.0, 0.0], [jnp.nan, 0.0]])
    where = jnp.array([True, False])

    def total(student):
      terms = losses.kd_loss(
        student, teacher, jnp.array([0, 1]), temperature=2.0, where=where
      )
      return jnp.sum(terms["loss"])

    terms = jax.jit(functools.partial(losses.kd_loss, temperature=2.0))(
      student, teacher, jnp.array([0, 1]), where=where
    )
    assert float(terms["loss"][1]) == 0.0
    assert np.all(np.isfinite(jax.jit(jax.grad(total))(student)))

  def test_unknown_divergence_is_named(self):
    with pytest.raises(ValueError, match="'not_a_divergence'"):
      losses.distillation_divergence(
        jnp.zeros((1, 2)), jnp.zeros((1, 2)), divergence="not_a_divergence"
      )
    with pytest.raises(ValueError, match="'not_a_divergence'"):
      distill.make_method("kd", divergence="not_a_divergence")

  def test_unknown_method_is_named(self):
    with pytest.raises(ValueError, match="'distil'"):
      distill.make_method("distil")


class TestMutualLearning:
  def test_values_and_isolated_gradients(self, rng):
    teacher = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    student = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    labels = jnp.array([0, 1, 2])
    terms = jax.jit(losses.mutual_learning_loss)(teacher, student, labels)

    p_t, p_s = softmax(np.asarray(teacher)), softmax(np.asarray(student))
    np.testing.assert_allclose(
      terms["student"]["distill"], kl(p_t, p_s), rtol=1e-5
    )
    np.testing.assert_allclose(
      terms["teacher"]["distill"], kl(p_s, p_t), rtol=1e-5
    )

    def student_loss(teacher):
      out = losses.mutual_learning_loss(teacher, student, labels)
      return jnp.sum(out["student"]["loss"])

    grad = jax.jit(jax.grad(student_loss))(teacher)
    np.testing.assert_array_equal(grad, 0.0)


class TestBalancedKd:
  def test_weights_on_hand_made_batch(self):
    log3 = math.log(3.0)
    teacher = jnp.array(
      [[0.0, 0.0], [0.0, 0.0], [log3, 0.0], [0.0, 0.0], [5.0, 0.0]]
    )
    student = jnp.array(
      [[0.0, 0.0], [log3, 0.0], [0.0, 0.0], [log3, 0.0], [5.0, 0.0]]
    )
    where = jnp.array([True, True, True, False, True])
    weights = losses.balance_weights(teacher, student, where=where)

    # softmax([log 3, 0]) = [3/4, 1/4]; its entropy in nats.
    h_peaked = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    gap = (math.log(2.0) - h_peaked) / (2.0 * math.log(2.0))
    np.testing.assert_allclose(
      weights, [0.5, 0.5 + gap, 0.5 - gap, 0.0, 0.5], atol=1e-6
    )
    assert 0.5 + gap == pytest.approx(0.594361, abs=1e-6)

  def test_weights_extremes(self):
    # A uniform teacher and a one-hot student give w = 1, and the reverse 0.
    uniform = jnp.zeros((1, 3))
    one_hot = jnp.array([[1e4, 0.0, 0.0]])
    np.testing.assert_allclose(
      losses.balance_weights(uniform, one_hot), [1.0], atol=1e-6
    )
    np.testing.assert_allclose(
      losses.balance_weights(one_hot, uniform), [0.0], atol=1e-6
    )

  def test_losses_match_numpy(self, rng):
    teacher = np.asarray(rng.normal(size=(6, 5)) * 2, np.float32)
    student = np.asarray(rng.normal(size=(6, 5)), np.float32)
    labels = jnp.asarray(rng.integers(0, 5, size=6), jnp.int32)
    bdkd_loss = functools.partial(
      losses.bdkd_loss, temperature=2.0, weight=0.5, teacher_weight=0.25
    )
    terms = jax.jit(bdkd_loss)(
      jnp.asarray(teacher), jnp.asarray(student), labels
    )

    p_t, p_s = softmax(teacher / 2.0), softmax(student / 2.0)
    w = 0.5 + (entropy(p_t) - entropy(p_s)) / (2 * math.log(5))
    student_distill = 4.0 * (w * kl(p_t, p_s) + (1 - w) * kl(p_s, p_t))
    np.testing.assert_allclose(terms["student"]["forward_weight"], w, rtol=1e-5)
    np.testing.assert_allclose(
      terms["student"]["distill"], student_distill, rtol=1e-5
    )
    np.testing.assert_allclose(
      terms["student"]["loss"],
      terms["student"]["ce"] + 0.5 * student_distill,
      rtol=1e-5,
    )
    np.testing.assert_allclose(
      terms["teacher"]["distill"], 4.0 * kl(p_s, p_t), rtol=1e-5
    )
    np.testing.assert_allclose(
      terms["teacher"]["loss"],
      terms["teacher"]["ce"] + 0.25 * 4.0 * kl(p_s, p_t),
      rtol=1e-5,
    )


class TestTrainStep:
  def test_no_recompilation_after_first_step(self, mesh8, kd_step):
    _, state = kd_state(mesh8)
    for index in range(4):
      state, _ = kd_step(state, sharding.shard_batch(make_batch(index), mesh8))
    assert kd_step._cache_size() == 1
    assert int(state.step) == 4

  def test_same_loss_on_one_and_eight_devices(self, mesh8, kd_step):
    mesh1 = sharding.make_mesh(jax.devices()[:1])
    graphdefs, state1 = kd_state(mesh1)
    step1 = distill.jit_train_step(
      distill.make_train_step(KD_METHOD, graphdefs, OPTIMIZER), mesh1
    )
    _, state8 = kd_state(mesh8)

    for index in range(2):
      batch = make_batch(index)
      state1, metrics1 = step1(state1, sharding.shard_batch(batch, mesh1))
      state8, metrics8 = kd_step(state8, sharding.shard_batch(batch, mesh8))
      for key in ("loss", "ce", "distill", "nll", "correct"):
        np.testing.assert_allclose(
          metrics1["student"][key], metrics8["student"][key], atol=1e-5
        )
    for a, b in zip(
      jax.tree.leaves(state1.params),
      jax.tree.leaves(state8.params),
      strict=True,
    ):
      np.testing.assert_allclose(a, b, atol=1e-5)

  def test_frozen_teacher_is_unchanged(self, mesh8, kd_step):
    _, state = kd_state(mesh8)
    before = jax.tree.map(np.asarray, state.frozen)
    state, _ = kd_step(state, sharding.shard_batch(make_batch(0), mesh8))
    for a, b in zip(
      jax.tree.leaves(before), jax.tree.leaves(state.frozen), strict=True
    ):
      np.testing.assert_array_equal(a, b)

  @pytest.mark.parametrize("name", ["dml", "bdkd"])
  def test_online_methods_train_both_networks(self, mesh8, name):
    method = distill.make_method(name, temperature=2.0)
    graphdefs, state = state_lib.create(
      {"teacher": tiny_mlp(1), "student": tiny_mlp(2)}, OPTIMIZER, seed=0
    )
    state = jax.device_put(state, sharding.replicated(mesh8))
    step = distill.jit_train_step(
      distill.make_train_step(method, graphdefs, OPTIMIZER), mesh8
    )
    before = jax.tree.map(np.asarray, state.params)

    losses_seen = []
    for _ in range(30):
      state, metrics = step(state, sharding.shard_batch(make_batch(0), mesh8))
      losses_seen.append(float(metrics["student"]["loss"]))
    for network in ("teacher", "student"):
      changed = jax.tree.leaves(before[network])[0]
      assert not np.allclose(changed, jax.tree.leaves(state.params[network])[0])
    assert losses_seen[-1] < losses_seen[0]
    assert float(metrics["student"]["count"]) == BATCH

  def test_padded_examples_do_not_count(self, mesh8, kd_step):
    _, state = kd_state(mesh8)
    batch = make_batch(0)
    batch["mask"][BATCH // 2 :] = False
    batch["image"][BATCH // 2 :] = np.nan
    state, metrics = kd_step(state, sharding.shard_batch(batch, mesh8))
    assert float(metrics["student"]["count"]) == BATCH // 2
    assert np.isfinite(float(metrics["student"]["loss"]))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))

  def test_batch_not_divisible_by_devices(self, mesh8):
    batch = {key: value[:12] for key, value in make_batch(0).items()}
    with pytest.raises(ValueError, match="batch size 12"):
      sharding.shard_batch(batch, mesh8)


class TestCheckpointing:
  def test_resumed_run_equals_uninterrupted(self, tmp_path, mesh8, kd_step):
    _, state = kd_state(mesh8)
    iterator = batch_iterator()
    state = loop.train(state, kd_step, iterator, mesh8, num_steps=6)
    uninterrupted = jax.tree.map(np.asarray, state.params)

    checkpointer = Checkpointer(str(tmp_path), save_every=2, max_to_keep=3)
    _, state = kd_state(mesh8)
    iterator = batch_iterator()
    loop.train(
      state,
      kd_step,
      iterator,
      mesh8,
      num_steps=4,
      checkpointer=checkpointer,
      data_iterator=iterator,
    )
    checkpointer.close()

    # A fresh process: new state, new iterator, both restored from disk.
    checkpointer = Checkpointer(str(tmp_path), save_every=2, max_to_keep=3)
    assert checkpointer.latest_step() == 4
    _, fresh = kd_state(mesh8, seed=7)
    iterator = batch_iterator()
    state = checkpointer.restore(
      abstract_like(fresh, sharding.replicated(mesh8)), iterator
    )
    assert int(state.step) == 4
    state = loop.train(
      state,
      kd_step,
      iterator,
      mesh8,
      num_steps=6,
      checkpointer=checkpointer,
      data_iterator=iterator,
    )
    resumed = jax.tree.map(np.asarray, state.params)
    for a, b in zip(
      jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed), strict=True
    ):
      np.testing.assert_array_equal(a, b)

  def test_keeps_last_checkpoints(self, tmp_path, mesh8):
    _, state = kd_state(mesh8)
    checkpointer = Checkpointer(str(tmp_path), save_every=2, max_to_keep=2)
    for step in range(1, 7):
      checkpointer.save(step, state)
    checkpointer.close()
    assert sorted(os.listdir(tmp_path)) == ["4", "6"]

  def test_partial_checkpoint_is_named(self, tmp_path, mesh8):
    _, state = kd_state(mesh8)
    checkpointer = Checkpointer(str(tmp_path), save_every=1, max_to_keep=2)
    checkpointer.save(3, state)
    state_dir = tmp_path / "3" / "state"
    for root, _, files in os.walk(state_dir):
      for name in files:
        os.remove(os.path.join(root, name))
    with pytest.raises(CheckpointError, match=str(tmp_path / "3")):
      checkpointer.restore(abstract_like(state, sharding.replicated(mesh8)))

  def test_directory_that_is_a_file(self, tmp_path):
    path = tmp_path / "file"
    path.write_text("not a directory")
    with pytest.raises(CheckpointError, match="is not a directory"):
      Checkpointer(str(path), save_every=1, max_to_keep=1)

  def test_nan_loss_names_step_and_checkpoint(self, tmp_path, mesh8, kd_step):
    _, state = kd_state(mesh8)
    checkpointer = Checkpointer(str(tmp_path), save_every=2, max_to_keep=2)

    def batches():
      for index in range(10):
        batch = make_batch(index)
        if index == 4:
          batch["image"][:] = np.nan
        yield batch

    with pytest.raises(loop.NonFiniteLossError) as error:
      loop.train(
        state, kd_step, batches(), mesh8, num_steps=8, checkpointer=checkpointer
      )
    message = str(error.value)
    assert "step 5" in message
    assert str(tmp_path / "4") in message
    assert checkpointer.latest_step() == 4
