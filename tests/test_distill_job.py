"""End-to-end tests of ``python -m experiments.distill`` on a tiny config."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from experiments import distill
from experiments.configs import distill as distill_config
from trainers.checkpoint import CheckpointError
from trainers.loop import NonFiniteLossError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny networks and four steps per run: the outputs, not the accuracy, are
# under test. Batch sizes are multiples of the 8 forced CPU devices.
TINY_OVERRIDES = {
  "seeds": "1",
  "methods": "('ce', 'kd')",
  "kd_divergences": "('kl',)",
  "batch_size": "32",
  "teacher.features": "(4,)",
  "teacher.hidden": "8",
  "teacher.steps": "4",
  "student.hidden_sizes": "(8,)",
  "student.steps": "4",
  "checkpoint_every": "2",
  "log_every": "2",
}
RUNS = ("teacher-ce-seed0", "student-ce-seed0", "kd-kl-seed0")


def tiny_config(data_dir):
  config = distill_config.get_config()
  config.data_dir = str(data_dir)
  config.seeds = 1
  config.methods = ("ce", "kd")
  config.kd_divergences = ("kl",)
  config.batch_size = 32
  config.teacher.features = (4,)
  config.teacher.hidden = 8
  config.teacher.steps = 4
  config.student.hidden_sizes = (8,)
  config.student.steps = 4
  config.checkpoint_every = 2
  config.log_every = 2
  return config


def read_json(path):
  with open(path) as file:
    return json.load(file)


def read_lines(path):
  with open(path) as file:
    return [json.loads(line) for line in file if line.strip()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
  """A workdir after one run of the job's command line on the tiny config."""
  workdir = tmp_path_factory.mktemp("job") / "run"
  command = [
    sys.executable,
    "-m",
    "experiments.distill",
    f"--workdir={workdir}",
    f"--config.data_dir={data_dir}",
  ]
  command += [
    f"--config.{key}={value}" for key, value in TINY_OVERRIDES.items()
  ]
  completed = subprocess.run(
    command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  return workdir, completed


@pytest.fixture
def workdir_copy(tmp_path, finished):
  """A private copy of the finished workdir that a test may change."""
  copy = tmp_path / "run"
  shutil.copytree(finished[0], copy)
  return copy


@pytest.mark.slow
class TestJobOutputs:
  def test_results_json_records(self, finished):
    records = read_json(finished[0] / "results.json")
    assert [record["run"] for record in records] == list(RUNS)
    roles = [(r["role"], r["method"], r["divergence"]) for r in records]
    assert roles == [
      ("teacher", "ce", None),
      ("student", "ce", None),
      ("student", "kd", "kl"),
    ]
    for record in records:
      assert record["seed"] == 0
      for key in ("test_accuracy", "test_ece", "test_nll"):
        assert isinstance(record[key], float), key
      assert 0.0 <= record["test_accuracy"] <= 1.0
      assert 0.0 <= record["test_ece"] <= 1.0
      assert sum(record["calibration_bins"]["count"]) == 360

  def test_table_written_and_printed(self, finished):
    workdir, completed = finished
    table = (workdir / "results.md").read_text()
    assert "| student | kd | kl | 1 |" in table
    assert "| teacher | ce | - | 1 |" in table
    assert "| student | kd | kl | 1 |" in completed.stdout

  def test_metrics_lines(self, finished):
    lines = read_lines(finished[0] / "metrics.jsonl")
    train = [(x["run"], x["step"]) for x in lines if x["split"] == "train"]
    test = [(x["run"], x["step"]) for x in lines if x["split"] == "test"]
    assert train == [(run, step) for run in RUNS for step in (2, 4)]
    assert test == [(run, 4) for run in RUNS]
    kd_line = next(x for x in lines if x["run"] == "kd-kl-seed0")
    assert {"student/loss", "student/distill", "student/ece"} <= set(kd_line)

  def test_plots_are_png(self, finished):
    for name in ("reliability.png", "comparison.png"):
      with open(finished[0] / name, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n", name

  def test_checkpoints_keep_last_two(self, finished):
    for run in RUNS:
      steps = sorted(os.listdir(finished[0] / "checkpoints" / run))
      assert steps == ["2", "4"], run

  def test_logs_config_and_progress(self, finished):
    stderr = finished[1].stderr
    assert "Config:" in stderr
    assert "12/12" in stderr  # The tqdm bar over all steps.


@pytest.mark.slow
class TestResume:
  def test_rerun_skips_completed_runs(self, workdir_copy, data_dir):
    before = (workdir_copy / "results.json").read_text()
    lines_before = (workdir_copy / "metrics.jsonl").read_text()
    distill.run_experiment(tiny_config(data_dir), str(workdir_copy))
    assert (workdir_copy / "results.json").read_text() == before
    assert (workdir_copy / "metrics.jsonl").read_text() == lines_before

  def test_partial_run_resumes_from_checkpoint(self, workdir_copy, data_dir):
    results_path = workdir_copy / "results.json"
    records = read_json(results_path)
    original = records[-1]
    assert original["run"] == "kd-kl-seed0"
    # Interrupted after step 2: no record and no checkpoint of step 4.
    results_path.write_text(json.dumps(records[:-1]))
    shutil.rmtree(workdir_copy / "checkpoints" / "kd-kl-seed0" / "4")

    records = distill.run_experiment(tiny_config(data_dir), str(workdir_copy))
    resumed = records[-1]
    assert resumed["run"] == "kd-kl-seed0"
    for key in ("test_accuracy", "test_ece", "test_nll"):
      assert resumed[key] == pytest.approx(original[key], abs=1e-6), key
    lines = read_lines(workdir_copy / "metrics.jsonl")
    kd_steps = [
      x["step"]
      for x in lines
      if x["run"] == "kd-kl-seed0" and x["split"] == "train"
    ]
    assert kd_steps == [2, 4]


@pytest.mark.slow
class TestBadInput:
  def test_unknown_method(self, tmp_path, data_dir):
    config = tiny_config(data_dir)
    config.methods = ("ce", "distil")
    with pytest.raises(ValueError, match="unknown method 'distil'"):
      distill.run_experiment(config, str(tmp_path / "run"))

  def test_unknown_divergence(self, tmp_path, data_dir):
    config = tiny_config(data_dir)
    config.kd_divergences = ("kl", "kullback")
    with pytest.raises(ValueError, match="unknown divergence 'kullback'"):
      distill.run_experiment(config, str(tmp_path / "run"))

  def test_workdir_is_a_file(self, tmp_path, data_dir):
    path = tmp_path / "results"
    path.write_text("")
    with pytest.raises(ValueError, match=f"workdir '{path}'"):
      distill.run_experiment(tiny_config(data_dir), str(path))

  def test_unreadable_checkpoint(self, workdir_copy, data_dir):
    results_path = workdir_copy / "results.json"
    records = read_json(results_path)
    results_path.write_text(json.dumps(records[:-1]))
    before = results_path.read_text()
    checkpoint = workdir_copy / "checkpoints" / "kd-kl-seed0" / "4"
    for root, _, files in os.walk(checkpoint / "state"):
      for name in files:
        os.remove(os.path.join(root, name))

    with pytest.raises(CheckpointError, match=str(checkpoint)):
      distill.run_experiment(tiny_config(data_dir), str(workdir_copy))
    assert results_path.read_text() == before

  def test_nan_loss_keeps_earlier_results(self, workdir_copy, data_dir):
    before = (workdir_copy / "results.json").read_text()
    config = tiny_config(data_dir)
    config.kd_divergences = ("kl", "js")
    # Adam moves every weight by about the learning rate, so the second
    # step overflows the logits to inf and the loss to NaN.
    config.student.learning_rate = 1e38
    config.checkpoint_every = 1

    with pytest.raises(NonFiniteLossError) as error:
      distill.run_experiment(config, str(workdir_copy))
    message = str(error.value)
    assert "at step 2" in message
    assert str(workdir_copy / "checkpoints" / "kd-js-seed0" / "1") in message
    assert (workdir_copy / "results.json").read_text() == before


def test_default_plan_covers_every_method():
  specs = distill.plan_runs(distill_config.get_config())
  names = [spec.name for spec in specs]
  assert len(names) == len(set(names)) == 24
  methods = {(spec.method, spec.divergence) for spec in specs}
  assert methods == {
    ("ce", None),
    ("kd", "kl"),
    ("kd", "reverse_kl"),
    ("kd", "js"),
    ("kd", "total_variation"),
    ("dml", "kl"),
    ("bdkd", None),
  }
  assert {spec.seed for spec in specs} == {0, 1, 2}
