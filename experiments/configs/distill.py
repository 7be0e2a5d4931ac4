"""Default config of the distillation experiment on the UCI digits.

Run it with ``python -m experiments.distill --workdir=runs/distill`` and
override any field, e.g. ``--config.seeds=5`` or
``--config.methods="('ce', 'kd')"``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Return the default config; every field is documented inline."""
  config = ml_collections.ConfigDict()

  # Data: a TFDS image-classification dataset; "digits" is built offline.
  config.dataset = "digits"
  config.data_dir = ""  # TFDS data directory; "" selects the TFDS default.
  config.batch_size = 128  # Global batch; a multiple of the device count.
  config.eval_batch_size = 120  # Global batch of the test split.

  # What to train: seeds 0 .. seeds - 1, each with every method below.
  config.seeds = 3
  config.methods = ("ce", "kd", "dml", "bdkd")
  config.kd_divergences = ("kl", "reverse_kl", "js", "total_variation")

  # The CNN teacher, trained with cross-entropy once per seed for "kd".
  config.teacher = ml_collections.ConfigDict()
  config.teacher.features = (32, 64)
  config.teacher.hidden = 128
  config.teacher.learning_rate = 1e-2
  config.teacher.steps = 500

  # The MLP student. "dml" and "bdkd" train it together with a fresh teacher
  # for student.steps steps, each network with its own learning rate.
  config.student = ml_collections.ConfigDict()
  config.student.hidden_sizes = (64,)
  config.student.learning_rate = 1e-2
  config.student.steps = 400

  # Offline distillation: (1 - weight) CE + weight T^2 D(teacher || student).
  config.kd = ml_collections.ConfigDict()
  config.kd.temperature = 4.0
  config.kd.weight = 0.9

  # Deep mutual learning: CE + weight T^2 D(other || self) for both.
  config.dml = ml_collections.ConfigDict()
  config.dml.divergence = "kl"
  config.dml.temperature = 1.0
  config.dml.weight = 1.0

  # BD-KD: entropy-balanced forward/reverse KL for the student, reverse KL
  # for the teacher (see trainers.losses.bdkd_loss).
  config.bdkd = ml_collections.ConfigDict()
  config.bdkd.temperature = 1.0
  config.bdkd.weight = 1.0
  config.bdkd.teacher_weight = 1.0

  # Bookkeeping, in steps.
  config.log_every = 50  # Train metrics written to metrics.jsonl.
  config.eval_every = 0  # Test metrics during training; 0: only at the end.
  config.checkpoint_every = 200
  config.keep_checkpoints = 2
  return config
