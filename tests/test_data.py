"""Tests for the digits TFDS builder and the Grain loaders in experiments.data.

Nothing here reaches a network: digits is prepared from scikit-learn's files,
and the other TFDS names are only checked for their error messages.
"""

import collections
import importlib.util
import itertools
import json
import socket
import sys

import numpy as np
import pytest

from experiments import data, digits_builder

NUM_TRAIN = 1437
NUM_TEST = 360


@pytest.fixture
def no_network(monkeypatch):
  """Record and reject every socket connection and DNS lookup."""
  attempts = []

  def reject(*args, **kwargs):
    attempts.append(args)
    raise OSError("network access is disabled in this test")

  monkeypatch.setattr(socket.socket, "connect", reject)
  monkeypatch.setattr(socket.socket, "connect_ex", reject)
  monkeypatch.setattr(socket, "getaddrinfo", reject)
  return attempts


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A TFDS data directory with digits prepared once for this module."""
  path = str(tmp_path_factory.mktemp("tfds"))
  data.prepare("digits", data_dir=path)
  return path


def _take(iterator, count):
  return list(itertools.islice(iterator, count))


def _assert_batches_equal(actual, expected):
  assert len(actual) == len(expected)
  for got, want in zip(actual, expected, strict=True):
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def _example_counts(batches):
  """Count real (unmasked) examples by their image bytes and label."""
  counts = collections.Counter()
  for batch in batches:
    for image, label in zip(
      batch["image"][batch["mask"]], batch["label"][batch["mask"]], strict=True
    ):
      counts[image.tobytes(), int(label)] += 1
  return counts


def test_prepare_offline(tmp_path, no_network):
  source = data.load_split("digits", "test", data_dir=str(tmp_path))

  assert no_network == []
  assert len(source) == NUM_TEST
  assert sorted(tmp_path.glob("digits/1.0.0/digits-train.array_record-*"))
  assert sorted(tmp_path.glob("digits/1.0.0/digits-test.array_record-*"))


@pytest.mark.skipif(
  importlib.util.find_spec("tensorflow") is not None,
  reason="TensorFlow is installed, so its absence cannot be checked",
)
def test_pipeline_runs_without_tensorflow(data_dir):
  loader = data.make_loader("digits", "test", batch_size=8, data_dir=data_dir)
  batch = next(iter(loader))

  assert batch["image"].shape == (8, 8, 8, 1)
  assert "tensorflow" not in sys.modules


def test_info_digits(data_dir):
  info = data.get_info("digits", data_dir=data_dir)

  assert info.name == "digits"
  assert info.num_classes == 10
  assert info.image_shape == (8, 8, 1)
  assert info.num_examples == {"train": NUM_TRAIN, "test": NUM_TEST}


def test_split_indices_stratified_partition():
  splits = digits_builder.split_indices()
  labels = digits_builder.sk_datasets.load_digits().target
  train, test = splits["train"], splits["test"]

  assert len(train) == NUM_TRAIN
  assert len(test) == NUM_TEST
  assert np.intersect1d(train, test).size == 0
  np.testing.assert_array_equal(
    np.sort(np.concatenate([train, test])), np.arange(len(labels))
  )
  # Stratification keeps each class's share of the test split within 1.
  expected = np.bincount(labels) * NUM_TEST / len(labels)
  assert np.all(np.abs(np.bincount(labels[test]) - expected) <= 1)


def test_split_indices_deterministic():
  first = digits_builder.split_indices()
  second = digits_builder.split_indices()

  np.testing.assert_array_equal(first["train"], second["train"])
  np.testing.assert_array_equal(first["test"], second["test"])


def test_to_uint8_scales_counts():
  scaled = digits_builder.to_uint8(np.arange(17))

  assert scaled.dtype == np.uint8
  assert scaled[0] == 0
  assert scaled[16] == 255
  assert np.all(np.diff(scaled.astype(int)) > 0)


@pytest.mark.parametrize("split", ["train", "test"])
def test_source_records_valid(data_dir, split):
  source = data.load_split("digits", split, data_dir=data_dir)
  records = [source[i] for i in range(len(source))]
  labels = np.array([record["label"] for record in records])
  images = np.stack([record["image"] for record in records])

  assert images.shape == (len(source), 8, 8, 1)
  assert images.dtype == np.uint8
  assert images.max() == 255
  assert labels.min() == 0
  assert labels.max() == 9
  assert set(np.unique(labels)) == set(range(10))


def test_source_matches_sklearn(data_dir):
  source = data.load_split("digits", "test", data_dir=data_dir)
  digits = digits_builder.sk_datasets.load_digits()
  test = digits_builder.split_indices()["test"]
  expected = collections.Counter(
    (
      digits_builder.to_uint8(digits.images[i])[..., None].tobytes(),
      int(digits.target[i]),
    )
    for i in test
  )

  actual = collections.Counter(
    (source[i]["image"].tobytes(), int(source[i]["label"]))
    for i in range(len(source))
  )
  assert actual == expected


def test_loader_batch_format(data_dir):
  loader = data.make_loader("digits", "train", batch_size=32, data_dir=data_dir)
  batch = next(iter(loader))

  assert set(batch) == {"image", "label", "mask"}
  assert batch["image"].shape == (32, 8, 8, 1)
  assert batch["image"].dtype == np.float32
  assert batch["image"].min() >= 0.0
  assert batch["image"].max() <= 1.0
  assert batch["label"].shape == (32,)
  assert batch["label"].dtype == np.int32
  assert batch["mask"].shape == (32,)
  assert batch["mask"].dtype == np.bool_


def test_loader_same_seed_same_order(data_dir):
  kwargs = dict(batch_size=64, data_dir=data_dir, num_epochs=2)
  first = list(data.make_loader("digits", "test", seed=3, **kwargs))
  second = list(data.make_loader("digits", "test", seed=3, **kwargs))
  other = list(data.make_loader("digits", "test", seed=4, **kwargs))

  _assert_batches_equal(second, first)
  assert not np.array_equal(other[0]["label"], first[0]["label"])


def test_loader_reshuffles_each_epoch(data_dir):
  loader = data.make_loader(
    "digits", "test", batch_size=NUM_TEST, data_dir=data_dir, num_epochs=2
  )
  epoch_1, epoch_2 = list(loader)

  assert not np.array_equal(epoch_1["label"], epoch_2["label"])
  assert _example_counts([epoch_1]) == _example_counts([epoch_2])


def test_loader_without_shuffle_keeps_source_order(data_dir):
  source = data.load_split("digits", "test", data_dir=data_dir)
  loader = data.make_loader(
    "digits", "test", batch_size=NUM_TEST, data_dir=data_dir, shuffle=False
  )
  (batch,) = list(loader)

  expected = [source[i]["label"] for i in range(len(source))]
  np.testing.assert_array_equal(batch["label"], expected)


def test_loader_pads_last_batch_with_mask(data_dir):
  loader = data.make_loader(
    "digits", "test", batch_size=64, data_dir=data_dir, shuffle=False
  )
  batches = list(loader)
  last = batches[-1]

  assert len(batches) == 6  # ceil(360 / 64)
  assert all(batch["image"].shape == (64, 8, 8, 1) for batch in batches)
  assert all(batch["mask"].all() for batch in batches[:-1])
  np.testing.assert_array_equal(last["mask"], np.arange(64) < 360 - 5 * 64)
  assert not last["image"][~last["mask"]].any()
  assert not last["label"][~last["mask"]].any()


def test_loader_drop_remainder(data_dir):
  loader = data.make_loader(
    "digits", "test", batch_size=64, data_dir=data_dir, drop_remainder=True
  )
  batches = list(loader)

  assert len(batches) == 5  # floor(360 / 64)
  assert all(batch["mask"].all() for batch in batches)


def test_process_shard_disjoint_equal_lengths():
  source = [
    {"image": np.zeros((1, 1, 1), np.uint8), "label": i} for i in range(10)
  ]
  shards = [
    data._ProcessShard(
      source,
      shard_index=index,
      shard_count=4,
      drop_remainder=False,
      image_shape=(1, 1, 1),
      cache=False,
    )
    for index in range(4)
  ]
  real = [
    [s[i]["label"] for i in range(len(s)) if s[i]["mask"]] for s in shards
  ]

  assert [len(shard) for shard in shards] == [3, 3, 3, 3]
  assert sorted(itertools.chain(*real)) == list(range(10))
  assert real == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]


def test_process_shard_drop_remainder_lengths():
  source = [
    {"image": np.zeros((1, 1, 1), np.uint8), "label": i} for i in range(10)
  ]
  lengths = [
    len(
      data._ProcessShard(
        source,
        shard_index=index,
        shard_count=4,
        drop_remainder=True,
        image_shape=(1, 1, 1),
        cache=False,
      )
    )
    for index in range(4)
  ]

  assert lengths == [2, 2, 2, 2]


def test_loader_shards_partition_split(data_dir):
  full = list(
    data.make_loader(
      "digits", "test", batch_size=NUM_TEST, data_dir=data_dir, shuffle=False
    )
  )
  shards = [
    list(
      data.make_loader(
        "digits",
        "test",
        batch_size=16,
        data_dir=data_dir,
        seed=7,
        process_index=index,
        process_count=7,
      )
    )
    for index in range(7)
  ]
  shard_counts = [_example_counts(batches) for batches in shards]

  # 360 = 7 * 51 + 3, so each process gets 52 slots, which make 4 batches.
  assert [len(batches) for batches in shards] == [4] * 7
  assert [sum(c.values()) for c in shard_counts] == [52] * 3 + [51] * 4
  assert sum(shard_counts, collections.Counter()) == _example_counts(full)


def test_loader_cache_same_batches(data_dir):
  kwargs = dict(batch_size=100, data_dir=data_dir, seed=1, num_epochs=2)
  cached = list(data.make_loader("digits", "test", cache=True, **kwargs))
  uncached = list(data.make_loader("digits", "test", cache=False, **kwargs))

  _assert_batches_equal(cached, uncached)


def test_iterator_checkpoint_round_trip(data_dir):
  # 360 examples make 11.25 batches of 32, so the batches after the saved
  # state cross into the second epoch.
  kwargs = dict(batch_size=32, data_dir=data_dir, seed=5, num_epochs=2)
  iterator = iter(data.make_loader("digits", "test", **kwargs))
  _take(iterator, 8)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = _take(iterator, 6)

  restored = iter(data.make_loader("digits", "test", **kwargs))
  restored.set_state(state)
  actual = _take(restored, 6)

  _assert_batches_equal(actual, expected)


def test_unknown_dataset_error(tmp_path):
  with pytest.raises(ValueError, match="dataset 'foo' is not a registered"):
    data.load_split("foo", "train", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="Known embedded datasets: digits"):
    data.make_loader("foo", "train", batch_size=8, data_dir=str(tmp_path))


def test_unprepared_dataset_error_offline(tmp_path, no_network):
  with pytest.raises(ValueError, match="dataset 'mnist' not found in data_dir"):
    data.load_split("mnist", "train", data_dir=str(tmp_path))

  assert no_network == []


def test_loader_invalid_arguments(data_dir):
  with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
    data.make_loader("digits", "test", batch_size=0, data_dir=data_dir)
  with pytest.raises(ValueError, match="process_index=2, process_count=2"):
    data.make_loader(
      "digits",
      "test",
      batch_size=8,
      data_dir=data_dir,
      process_index=2,
      process_count=2,
    )
  with pytest.raises(ValueError, match="batch_size 512 exceeds the 360"):
    data.make_loader(
      "digits", "test", batch_size=512, data_dir=data_dir, drop_remainder=True
    )
