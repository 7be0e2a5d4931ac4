"""Per-example losses of supervised training and knowledge distillation.

Every function takes logits ``[batch, classes]`` and returns per-example
values ``[batch]``; rows with ``where`` False are exactly 0.
"""

import math

import jax
import jax.numpy as jnp
import optax

import divergences

Array = jax.Array


def _row_mask(where: Array | None, batch_shape: tuple[int, ...]) -> Array:
  if where is None:
    return jnp.ones(batch_shape, dtype=bool)
  return jnp.broadcast_to(jnp.asarray(where, dtype=bool), batch_shape)


def cross_entropy(
  logits: Array, labels: Array, *, where: Array | None = None
) -> Array:
  """Compute the cross-entropy of integer labels under softmax(logits).

  .. math::
    CE_i = -\\log \\mathrm{softmax}(z_i)_{y_i}

  Args:
    logits: ``[batch, classes]``.
    labels: ``[batch]`` integers in ``[0, classes)``.
    where: ``[batch]`` booleans; False rows return 0 with zero gradient.

  Returns:
    ``[batch]`` cross-entropies in float32.
  """
  mask = _row_mask(where, labels.shape)
  # Masked rows see zero logits, so padding cannot produce a NaN gradient.
  safe_logits = jnp.where(mask[:, None], logits.astype(jnp.float32), 0.0)
  losses = optax.softmax_cross_entropy_with_integer_labels(safe_logits, labels)
  return jnp.where(mask, losses, 0.0)


def entropy(
  logits: Array, *, temperature: float = 1.0, where: Array | None = None
) -> Array:
  """Compute the Shannon entropy of softmax(logits / temperature) per row.

  .. math::
    H_i = -\\sum_c p_{ic} \\log p_{ic}, \\quad p_i = \\mathrm{softmax}(z_i / T)

  Args:
    logits: ``[batch, classes]``.
    temperature: divides the logits; must be > 0.
    where: ``[batch]`` booleans; False rows return 0.

  Returns:
    ``[batch]`` entropies in nats, in ``[0, log classes]``.
  """
  mask = _row_mask(where, logits.shape[:-1])
  safe_logits = jnp.where(mask[:, None], logits.astype(jnp.float32), 0.0)
  log_probs = jax.nn.log_softmax(safe_logits / temperature, axis=-1)
  # -sum p log p written as a weighted sum of log-probabilities, which stays
  # finite where a probability underflows to 0.
  values = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
  return jnp.where(mask, values, 0.0)


def distillation_divergence(
  teacher_logits: Array,
  student_logits: Array,
  *,
  divergence: str = "kl",
  temperature: float = 1.0,
  where: Array | None = None,
) -> Array:
  """Compute the Hinton-scaled divergence T^2 D(teacher || student).

  .. math::
    L_i = T^2 D(\\mathrm{softmax}(t_i / T) \\| \\mathrm{softmax}(s_i / T))

  The teacher is P, the first argument of ``divergences.f_divergence``, so
  ``"kl"`` is the forward KL of distillation and ``"reverse_kl"`` is
  KL(student || teacher). The T^2 factor keeps the gradient scale of KL
  independent of T ("Distilling the Knowledge in a Neural Network", Hinton,
  Vinyals and Dean, 2015, section 2). No gradient reaches the teacher.

  Args:
    teacher_logits: ``[batch, classes]``.
    student_logits: ``[batch, classes]``.
    divergence: a name from ``divergences.NAMES``.
    temperature: T, dividing both logits; must be > 0.
    where: ``[batch]`` booleans; False rows return 0.

  Returns:
    ``[batch]`` values.

  Raises:
    ValueError: ``divergence`` is not a registry name, or T is not > 0.
  """
  values = divergences.f_divergence(
    divergence,
    jax.lax.stop_gradient(teacher_logits),
    student_logits,
    temperature=temperature,
    where=where,
  )
  return temperature**2 * values


def kd_loss(
  student_logits: Array,
  teacher_logits: Array,
  labels: Array,
  *,
  divergence: str = "kl",
  temperature: float = 4.0,
  weight: float = 0.9,
  where: Array | None = None,
) -> dict[str, Array]:
  """Compute the offline distillation loss of a student from a frozen teacher.

  .. math::
    L_i = (1 - \\lambda) CE(y_i, s_i) + \\lambda T^2 D(p^t_i \\| p^s_i),
    \\quad p_i = \\mathrm{softmax}(z_i / T)

  ("Distilling the Knowledge in a Neural Network", Hinton et al. 2015,
  section 2, with any registered f-divergence in place of KL.)

  Args:
    student_logits: ``[batch, classes]``.
    teacher_logits: ``[batch, classes]``; treated as constants.
    labels: ``[batch]`` integers.
    divergence: a name from ``divergences.NAMES``.
    temperature: T > 0.
    weight: lambda in [0, 1], the weight of the distillation term.
    where: ``[batch]`` booleans; False rows return 0.

  Returns:
    ``{"loss", "ce", "distill"}``, each ``[batch]``.
  """
  ce = cross_entropy(student_logits, labels, where=where)
  distill = distillation_divergence(
    teacher_logits,
    student_logits,
    divergence=divergence,
    temperature=temperature,
    where=where,
  )
  loss = (1.0 - weight) * ce + weight * distill
  return {"loss": loss, "ce": ce, "distill": distill}


def mutual_learning_loss(
  teacher_logits: Array,
  student_logits: Array,
  labels: Array,
  *,
  divergence: str = "kl",
  temperature: float = 1.0,
  weight: float = 1.0,
  where: Array | None = None,
) -> dict[str, dict[str, Array]]:
  """Compute the deep mutual learning losses of two networks trained together.

  Each network k learns from the labels and from the other network's output,
  taken as a constant:

  .. math::
    L_{k,i} = CE(y_i, z_{k,i}) + w T^2 D(p_{\\bar k, i} \\| p_{k, i})

  With D = KL, T = 1 and w = 1 this is the loss of network 1 in "Deep Mutual
  Learning" (Zhang, Xiang, Hospedales and Lu, CVPR 2018): its cross-entropy
  plus KL(p_2 || p_1). Summing both losses and differentiating with respect
  to both parameter sets updates the two networks at once, because each loss
  reaches only its own network.

  Args:
    teacher_logits: ``[batch, classes]`` of the larger network.
    student_logits: ``[batch, classes]`` of the smaller network.
    labels: ``[batch]`` integers.
    divergence: a name from ``divergences.NAMES``.
    temperature: T > 0.
    weight: w >= 0, the weight of the mimicry term.
    where: ``[batch]`` booleans; False rows return 0.

  Returns:
    ``{"teacher": terms, "student": terms}`` with ``terms`` the dict
    ``{"loss", "ce", "distill"}`` of ``[batch]`` arrays.
  """
  losses = {}
  pairs = {
    "teacher": (student_logits, teacher_logits),
    "student": (teacher_logits, student_logits),
  }
  for name, (target_logits, own_logits) in pairs.items():
    ce = cross_entropy(own_logits, labels, where=where)
    distill = distillation_divergence(
      target_logits,
      own_logits,
      divergence=divergence,
      temperature=temperature,
      where=where,
    )
    losses[name] = {"loss": ce + weight * distill, "ce": ce, "distill": distill}
  return losses


def balance_weights(
  teacher_logits: Array,
  student_logits: Array,
  *,
  temperature: float = 1.0,
  where: Array | None = None,
) -> Array:
  """Compute BD-KD's per-example weight of the forward KL from entropies.

  .. math::
    w_i = \\frac{1}{2} + \\frac{H(p^t_i) - H(p^s_i)}{2 \\log C}

  with p = softmax(logits / T) and C classes. Since both entropies lie in
  [0, log C], w_i lies in [0, 1]; equal entropies give 1/2. A student more
  confident than its teacher (H^s < H^t) gets w > 1/2, more of the
  mode-covering forward KL(teacher || student), which raises its entropy.
  A less confident student gets more of the mode-seeking reverse KL. The
  weights are constants for the gradient.

  NOTE: "BD-KD: Balancing the Divergences for Online Knowledge Distillation"
  (Amara et al., arXiv 2212.12965) weighs forward and reverse KL sample by
  sample, but only its abstract could be read, not its equations. This
  linear map of the entropy gap is this codebase's rule, not the paper's.

  Args:
    teacher_logits: ``[batch, classes]``.
    student_logits: ``[batch, classes]``.
    temperature: T > 0, as used in the distillation terms.
    where: ``[batch]`` booleans; False rows return 0.

  Returns:
    ``[batch]`` weights in [0, 1].
  """
  num_classes = teacher_logits.shape[-1]
  if num_classes < 2:
    raise ValueError(f"BD-KD needs at least 2 classes, got {num_classes}")
  gap = entropy(teacher_logits, temperature=temperature) - entropy(
    student_logits, temperature=temperature
  )
  weights = 0.5 + gap / (2.0 * math.log(num_classes))
  mask = _row_mask(where, weights.shape)
  return jax.lax.stop_gradient(jnp.where(mask, weights, 0.0))


def bdkd_loss(
  teacher_logits: Array,
  student_logits: Array,
  labels: Array,
  *,
  temperature: float = 1.0,
  weight: float = 1.0,
  teacher_weight: float = 1.0,
  where: Array | None = None,
) -> dict[str, dict[str, Array]]:
  """Compute the BD-KD losses of an online teacher and student.

  The student's distillation term mixes forward and reverse KL per example
  with the weights w_i of ``balance_weights``. The teacher is regularised by
  the reverse KL, KL(p^s || p^t) in the paper's naming, with the student as
  a constant target:

  .. math::
    L^s_i = CE(y_i, s_i) + \\lambda T^2 [w_i KL(p^t_i \\| p^s_i)
      + (1 - w_i) KL(p^s_i \\| p^t_i)]

    L^t_i = CE(y_i, t_i) + \\lambda_t T^2 KL(p^s_i \\| p^t_i)

  Source: "BD-KD: Balancing the Divergences for Online Knowledge
  Distillation" (Amara et al., arXiv 2212.12965). Its abstract states the
  design, sample-wise weighting of forward and reverse KL in the student's
  loss and an adjusted teacher loss; the summary at
  sciencestack.ai/paper/2212.12965 names forward KL(p^t || p^s), reverse
  KL(p^s || p^t), the entropy gap as the guide of the weighting, and reverse
  KL as the teacher's regulariser. See ``balance_weights`` for what is this
  codebase's own choice.

  Args:
    teacher_logits: ``[batch, classes]``.
    student_logits: ``[batch, classes]``.
    labels: ``[batch]`` integers.
    temperature: T > 0.
    weight: lambda >= 0, the weight of the student's distillation term.
    teacher_weight: lambda_t >= 0, the weight of the teacher's reverse KL.
    where: ``[batch]`` booleans; False rows return 0.

  Returns:
    ``{"teacher": terms, "student": terms}``: teacher terms
    ``{"loss", "ce", "distill"}`` and student terms with also
    ``"forward_weight"`` (w_i), each ``[batch]``.
  """
  scale = temperature**2
  kl = divergences.kl_divergence
  teacher_const = jax.lax.stop_gradient(teacher_logits)
  student_const = jax.lax.stop_gradient(student_logits)
  forward_weight = balance_weights(
    teacher_logits, student_logits, temperature=temperature, where=where
  )

  student_ce = cross_entropy(student_logits, labels, where=where)
  forward = kl(
    teacher_const, student_logits, temperature=temperature, where=where
  )
  reverse = kl(
    student_logits, teacher_const, temperature=temperature, where=where
  )
  student_distill = scale * (
    forward_weight * forward + (1.0 - forward_weight) * reverse
  )

  teacher_ce = cross_entropy(teacher_logits, labels, where=where)
  teacher_distill = scale * kl(
    student_const, teacher_logits, temperature=temperature, where=where
  )
  return {
    "teacher": {
      "loss": teacher_ce + teacher_weight * teacher_distill,
      "ce": teacher_ce,
      "distill": teacher_distill,
    },
    "student": {
      "loss": student_ce + weight * student_distill,
      "ce": student_ce,
      "distill": student_distill,
      "forward_weight": forward_weight,
    },
  }
