"""Distil a CNN teacher into MLP students on the UCI digits, over seeds.

Per seed it trains the CNN teacher with cross-entropy, then MLP students with
cross-entropy only, offline KD with each divergence of the config, deep
mutual learning and BD-KD, and writes to ``--workdir``: ``results.json``,
``results.md``, ``metrics.jsonl``, ``reliability.png``, ``comparison.png``
and ``checkpoints/``. A rerun with the same workdir skips completed runs and
resumes a partial one from its latest checkpoint.

Usage::

  python -m experiments.distill --workdir=runs/distill --config.seeds=5

Runs and networks: offline KD students of seed s learn from the CNN teacher
trained with cross-entropy for seed s. DML and BD-KD train a fresh CNN and a
fresh MLP together from scratch. The MLP is reported with role "student" and
the CNN with role "teacher", under the method of the run.
"""

import dataclasses
import logging as std_logging
import os
import time

import jax
import ml_collections
import numpy as np
import optax
import tqdm
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

import divergences
from experiments import data, memory_data, plots, results
from models.cnn import CNN
from models.mlp import MLP
from trainers import distill, loop, metrics, sharding
from trainers import state as state_lib
from trainers.checkpoint import Checkpointer, CheckpointError, abstract_like

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  os.path.join(os.path.dirname(__file__), "configs", "distill.py"),
  "Config file; override fields with --config.FIELD=VALUE.",
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  os.path.join("runs", "distill"),
  "Directory for results, metrics, plots and checkpoints; reused to resume.",
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run.

  Attributes:
    name: unique name, also the checkpoint subdirectory, e.g.
      ``"kd-js-seed0"``.
    method: one of ``distill.METHODS``.
    trainable: names of the networks trained: "teacher" (CNN) and/or
      "student" (MLP).
    divergence: registry name of the distillation divergence, or None.
    seed: seeds network initialisation, the RNG key and the data order.
    steps: train steps.
  """

  name: str
  method: str
  trainable: tuple[str, ...]
  divergence: str | None
  seed: int
  steps: int


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raise ValueError for a config value that would fail later in a run."""
  for method in config.methods:
    if method not in distill.METHODS:
      raise ValueError(
        f"unknown method {method!r} in config.methods; valid methods:"
        f" {', '.join(distill.METHODS)}"
      )

  names = list(config.kd_divergences) if "kd" in config.methods else []
  if "dml" in config.methods:
    names.append(config.dml.divergence)
  for name in names:
    if name not in divergences.NAMES:
      raise ValueError(
        f"unknown divergence {name!r} in the config; valid names:"
        f" {', '.join(divergences.NAMES)}"
      )
    # Raises ValueError for a divergence that needs a parameter, e.g. alpha.
    divergences.get(name)

  positive = {
    "seeds": config.seeds,
    "batch_size": config.batch_size,
    "eval_batch_size": config.eval_batch_size,
    "teacher.steps": config.teacher.steps,
    "student.steps": config.student.steps,
    "log_every": config.log_every,
    "checkpoint_every": config.checkpoint_every,
    "keep_checkpoints": config.keep_checkpoints,
  }
  for field, value in positive.items():
    if value < 1:
      raise ValueError(f"config.{field} must be >= 1, got {value}")
  if config.eval_every < 0:
    raise ValueError(f"config.eval_every must be >= 0, got {config.eval_every}")


def teacher_spec(config: ml_collections.ConfigDict, seed: int) -> RunSpec:
  """Return the cross-entropy run of the CNN teacher of ``seed``."""
  return RunSpec(
    f"teacher-ce-seed{seed}",
    "ce",
    ("teacher",),
    None,
    seed,
    config.teacher.steps,
  )


def plan_runs(config: ml_collections.ConfigDict) -> list[RunSpec]:
  """List the runs of the config, seed by seed, the teacher first."""
  specs = []
  student_steps = config.student.steps
  for seed in range(config.seeds):
    specs.append(teacher_spec(config, seed))
    if "ce" in config.methods:
      specs.append(
        RunSpec(
          f"student-ce-seed{seed}",
          "ce",
          ("student",),
          None,
          seed,
          student_steps,
        )
      )
    if "kd" in config.methods:
      for name in config.kd_divergences:
        specs.append(
          RunSpec(
            f"kd-{name}-seed{seed}",
            "kd",
            ("student",),
            name,
            seed,
            student_steps,
          )
        )
    online = ("teacher", "student")
    if "dml" in config.methods:
      name = config.dml.divergence
      specs.append(
        RunSpec(
          f"dml-{name}-seed{seed}", "dml", online, name, seed, student_steps
        )
      )
    if "bdkd" in config.methods:
      specs.append(
        RunSpec(f"bdkd-seed{seed}", "bdkd", online, None, seed, student_steps)
      )
  return specs


def prepare_workdir(workdir: str) -> str:
  """Create ``workdir`` if needed and return its absolute path.

  Raises:
    ValueError: ``workdir`` exists and is not a directory.
  """
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(
      f"workdir {workdir!r} exists and is not a directory; pass a directory"
    )
  os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
  return workdir


def make_optimizer(
  schedules: dict[str, tuple[float, int]],
) -> optax.GradientTransformation:
  """Build Adam with a cosine-decayed learning rate per network.

  Args:
    schedules: ``{network: (peak learning rate, decay steps)}``.

  Returns:
    One transformation over ``{network: params}`` that applies each
    network's own schedule.
  """
  transforms = {
    name: optax.adam(optax.cosine_decay_schedule(rate, steps))
    for name, (rate, steps) in schedules.items()
  }

  def labels(params):
    return {
      name: jax.tree.map(lambda _, label=name: label, tree)
      for name, tree in params.items()
    }

  return optax.multi_transform(transforms, labels)


class Experiment:
  """Runner of the planned runs of one config in one workdir.

  Steps are compiled once per method and divergence and reused over seeds;
  eval steps once per network architecture.

  Args:
    config: the experiment config, checked with ``validate_config``.
    workdir: an existing directory, from ``prepare_workdir``.
    mesh: the data-parallel mesh.
  """

  def __init__(self, config, workdir: str, mesh: jax.sharding.Mesh):
    self.config = config
    self.workdir = workdir
    self.mesh = mesh
    self.replicated = sharding.replicated(mesh)
    self.metrics_path = os.path.join(workdir, "metrics.jsonl")
    self.progress = None

    data_dir = config.data_dir or None
    self.info = data.get_info(config.dataset, data_dir=data_dir)
    self.train_arrays = memory_data.read_split(
      config.dataset, "train", data_dir=data_dir
    )
    self.test_arrays = memory_data.read_split(
      config.dataset, "test", data_dir=data_dir
    )
    self._train_steps = {}
    self._eval_steps = {}

  def build_network(self, name: str, seed: int) -> nnx.Module:
    """Build the CNN ("teacher") or the MLP ("student") for ``seed``."""
    # Teacher and student of one seed draw from different streams.
    key = jax.random.fold_in(
      jax.random.PRNGKey(seed), ("teacher", "student").index(name)
    )
    rngs = nnx.Rngs(params=key)
    shape, classes = self.info.image_shape, self.info.num_classes
    if name == "teacher":
      return CNN(
        in_channels=shape[-1],
        num_classes=classes,
        features=tuple(self.config.teacher.features),
        hidden=self.config.teacher.hidden,
        rngs=rngs,
      )
    return MLP(
      int(np.prod(shape)),
      hidden_sizes=tuple(self.config.student.hidden_sizes),
      num_classes=classes,
      rngs=rngs,
    )

  def method(self, spec: RunSpec) -> distill.Method:
    """Build the method of ``spec`` from the config's constants."""
    config = self.config
    if spec.method == "ce":
      return distill.make_method("ce", network=spec.trainable[0])
    if spec.method == "kd":
      return distill.make_method(
        "kd",
        divergence=spec.divergence,
        temperature=config.kd.temperature,
        weight=config.kd.weight,
      )
    if spec.method == "dml":
      return distill.make_method(
        "dml",
        divergence=spec.divergence,
        temperature=config.dml.temperature,
        weight=config.dml.weight,
      )
    return distill.make_method(
      "bdkd",
      temperature=config.bdkd.temperature,
      weight=config.bdkd.weight,
      teacher_weight=config.bdkd.teacher_weight,
    )

  def initial_state(self, spec: RunSpec):
    """Build the networks, optimizer and step-0 state of ``spec``.

    Returns:
      ``(graphdefs, state, optimizer)``, the state placed on the mesh.
    """
    schedules = {
      name: (self.config[name].learning_rate, spec.steps)
      for name in spec.trainable
    }
    optimizer = make_optimizer(schedules)
    trainable = {
      name: self.build_network(name, spec.seed) for name in spec.trainable
    }
    frozen = (
      {"teacher": self.load_teacher(spec.seed)} if spec.method == "kd" else None
    )
    graphdefs, state = state_lib.create(
      trainable, optimizer, seed=spec.seed, frozen=frozen
    )
    return graphdefs, jax.device_put(state, self.replicated), optimizer

  def load_teacher(self, seed: int) -> nnx.Module:
    """Restore the final CNN teacher of ``seed`` from its checkpoints.

    Raises:
      CheckpointError: the teacher run has no final checkpoint.
    """
    spec = teacher_spec(self.config, seed)
    graphdefs, state, _ = self.initial_state(spec)
    checkpointer = self.checkpointer(spec)
    if checkpointer.latest_step() != spec.steps:
      raise CheckpointError(
        f"the teacher of seed {seed} has no checkpoint of its final step"
        f" {spec.steps} in {checkpointer.directory!r}; delete the"
        f" {spec.name!r} records from results.json to train it again"
      )
    state = checkpointer.restore(abstract_like(state, self.replicated))
    checkpointer.close()
    return nnx.merge(
      graphdefs["teacher"],
      state.params["teacher"],
      state.model_state["teacher"],
    )

  def checkpointer(self, spec: RunSpec) -> Checkpointer:
    """Open the checkpoint directory of ``spec``."""
    return Checkpointer(
      os.path.join(self.workdir, "checkpoints", spec.name),
      save_every=self.config.checkpoint_every,
      max_to_keep=self.config.keep_checkpoints,
    )

  def train_step(self, spec: RunSpec, graphdefs, optimizer):
    """Return the jitted train step of ``spec``, compiled once per method."""
    key = (spec.method, spec.divergence, spec.trainable)
    if key not in self._train_steps:
      step = distill.make_train_step(self.method(spec), graphdefs, optimizer)
      self._train_steps[key] = distill.jit_train_step(step, self.mesh)
    return self._train_steps[key]

  def eval_step(self, name: str, graphdef):
    """Return the jitted eval step of network ``name``."""
    if name not in self._eval_steps:
      evaluate = distill.make_eval_step(graphdef)
      self._eval_steps[name] = distill.jit_eval_step(evaluate, self.mesh)
    return self._eval_steps[name]

  def evaluate(self, spec: RunSpec, name: str, graphdef, state) -> dict:
    """Evaluate network ``name`` on the test split; log and return sums."""
    batches = memory_data.eval_batches(
      self.test_arrays, batch_size=self._local(self.config.eval_batch_size)
    )
    sums = loop.evaluate(
      distill.network_variables(state, name),
      self.eval_step(name, graphdef),
      batches,
      self.mesh,
    )
    line = {"run": spec.name, "network": name, "split": "test"}
    line.update(step=int(state.step), **metrics.summarize(sums))
    self._write_lines([line])
    return sums

  def run(self, spec: RunSpec) -> list[dict]:
    """Train ``spec`` (resuming from its latest checkpoint) and evaluate it.

    Returns:
      One record per trained network.
    """
    graphdefs, state, optimizer = self.initial_state(spec)
    step_fn = self.train_step(spec, graphdefs, optimizer)
    checkpointer = self.checkpointer(spec)
    batches = memory_data.train_batches(
      self.train_arrays,
      batch_size=self._local(self.config.batch_size),
      seed=spec.seed,
    )
    iterator = iter(batches)

    latest = checkpointer.latest_step()
    if latest is not None:
      state = checkpointer.restore(
        abstract_like(state, self.replicated), iterator
      )
      self._drop_lines_after(spec.name, latest)
      logging.info("Resuming run %s from step %d", spec.name, latest)
      self._advance(latest)

    def on_step(step, current, step_metrics):
      self._on_step(spec, graphdefs, step, current, step_metrics)

    state = loop.train(
      state,
      step_fn,
      iterator,
      self.mesh,
      num_steps=spec.steps,
      checkpointer=checkpointer,
      data_iterator=iterator,
      on_step=on_step,
    )
    checkpointer.close()
    return [
      self._record(
        spec, name, self.evaluate(spec, name, graphdefs[name], state)
      )
      for name in spec.trainable
    ]

  def _on_step(self, spec, graphdefs, step, state, step_metrics) -> None:
    self._advance(1)
    if step % self.config.log_every == 0 or step == spec.steps:
      line = {"run": spec.name, "split": "train", "step": step}
      line.update(metrics.summarize(step_metrics))
      self._write_lines([line])
    every = self.config.eval_every
    if every > 0 and step % every == 0 and step != spec.steps:
      for name in spec.trainable:
        self.evaluate(spec, name, graphdefs[name], state)

  def _record(self, spec: RunSpec, name: str, sums: dict) -> dict:
    means = metrics.summarize(sums)
    return {
      "run": spec.name,
      "role": name,
      "method": spec.method,
      "divergence": spec.divergence,
      "seed": spec.seed,
      "test_accuracy": means["accuracy"],
      "test_ece": means["ece"],
      "test_nll": means["nll"],
      "calibration_bins": {
        "count": np.asarray(sums["bin_count"]).tolist(),
        "confidence": np.asarray(sums["bin_confidence"]).tolist(),
        "correct": np.asarray(sums["bin_correct"]).tolist(),
      },
    }

  def _local(self, global_batch_size: int) -> int:
    sharding.check_batch_size(global_batch_size, self.mesh)
    return global_batch_size // jax.process_count()

  def _advance(self, steps: int) -> None:
    if self.progress is not None:
      self.progress.update(steps)

  def _write_lines(self, lines: list[dict]) -> None:
    if jax.process_index() == 0:
      results.append_lines(self.metrics_path, lines)

  def _drop_lines_after(self, run: str, step: int) -> None:
    if jax.process_index() == 0:
      results.drop_lines_after(self.metrics_path, run, step)


def run_experiment(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  devices: list[jax.Device] | None = None,
) -> list[dict]:
  """Train every run of ``config`` not yet in ``workdir/results.json``.

  Records are written after each run, so an error or interruption keeps the
  completed runs; a rerun resumes the partial one from its checkpoint.

  Args:
    config: the experiment config (``experiments/configs/distill.py``).
    workdir: output directory; created if missing.
    devices: devices of the mesh; None selects all.

  Returns:
    All records of ``results.json``.

  Raises:
    ValueError: an invalid config value or workdir.
    CheckpointError: a checkpoint cannot be read.
    loop.NonFiniteLossError: a loss became NaN or infinite.
  """
  validate_config(config)
  workdir = prepare_workdir(workdir)
  results_path = os.path.join(workdir, "results.json")
  records = results.load_records(results_path)
  done = {record.get("run") for record in records}

  experiment = Experiment(config, workdir, sharding.make_mesh(devices))
  specs = plan_runs(config)
  total = sum(spec.steps for spec in specs)
  with tqdm.tqdm(total=total, unit="step", dynamic_ncols=True) as progress:
    experiment.progress = progress
    for spec in specs:
      if spec.name in done:
        logging.info("Skipping completed run %s", spec.name)
        progress.update(spec.steps)
        continue
      progress.set_postfix_str(spec.name)
      logging.info("Starting run %s", spec.name)
      new_records = experiment.run(spec)
      records = [r for r in records if r.get("run") != spec.name] + new_records
      if jax.process_index() == 0:
        results.write_json_atomic(results_path, records)

  if jax.process_index() == 0:
    table = results.markdown_table(results.summarize(records))
    with open(os.path.join(workdir, "results.md"), "w") as file:
      file.write(table)
    plots.write_all(records, workdir)
  return records


class _OrbaxInfoFilter(std_logging.Filter):
  """Log filter that drops Orbax's INFO lines (about fifteen per save)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    from_orbax = f"{os.sep}orbax{os.sep}" in record.pathname
    return record.levelno >= std_logging.WARNING or not from_orbax


def main(argv: list[str]) -> None:
  logging.get_absl_handler().addFilter(_OrbaxInfoFilter())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  workdir = _WORKDIR.value
  logging.info("Workdir: %s", os.path.abspath(workdir))
  logging.info("Config:\n%s", config)
  logging.info("Devices: %s", jax.devices())

  start = time.perf_counter()
  try:
    records = run_experiment(config, workdir)
  except (ValueError, CheckpointError, loop.NonFiniteLossError) as error:
    logging.error("Experiment stopped: %s", error)
    raise SystemExit(f"error: {error}") from error

  logging.info("Finished in %.1f s", time.perf_counter() - start)
  print(results.markdown_table(results.summarize(records)))
  print(f"Wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  app.run(main)
