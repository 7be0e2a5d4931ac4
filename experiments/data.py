"""Image-classification data: TFDS ArrayRecord sources batched with Grain.

Sources are read with ``tfds.data_source``, which needs no TensorFlow. Each JAX
process reads its own shard of a split, and the iterators are checkpointable.
"""

import dataclasses
import functools
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from experiments import digits_builder

# Builders defined in this repository. They are prepared offline on first use.
EMBEDDED_DATASETS = {"digits": digits_builder.Digits}

# Never fetch prepared data from the public TFDS bucket on GCS.
_DOWNLOAD_CONFIG = tfds.download.DownloadConfig(try_download_gcs=False)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static description of a prepared image-classification dataset.

  Attributes:
    name: TFDS name of the dataset, e.g. ``"digits"`` or ``"mnist"``.
    num_classes: number of labels, which lie in ``0..num_classes - 1``.
    image_shape: ``[height, width, channels]`` of one image.
    num_examples: examples in each split, e.g. ``{"train": 1437, "test": 360}``.
  """

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_examples: dict[str, int]


def _known_names() -> str:
  return ", ".join(sorted(EMBEDDED_DATASETS))


def _get_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  try:
    return tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except tfds.core.DatasetNotFoundError:
    # The TFDS message lists every registered dataset, so it is replaced.
    raise ValueError(
      f"dataset {name!r} is not a registered TFDS dataset. Known embedded"
      f" datasets: {_known_names()}"
    ) from None


def prepare(
  name: str, *, data_dir: str | None = None, download: bool = False
) -> tfds.core.DatasetBuilder:
  """Prepare ``name`` in ``data_dir`` if it is missing, and return its builder.

  An embedded dataset (``EMBEDDED_DATASETS``) is prepared in ``data_dir`` on
  first use without network access. Any other TFDS dataset must already be
  prepared there in ArrayRecord format, unless ``download`` is True.

  NOTE: with ``download=True``, TFDS downloads the source files and prepares
  them locally (never from GCS). For image datasets such as mnist this encodes
  PNGs with TensorFlow, which is not a dependency of this project. That path
  has not been run here.

  NOTE: processes that share ``data_dir`` should not prepare the same dataset
  at the same time (e.g. prepare on process 0, then synchronise); concurrent
  preparation into one directory is untested.

  Args:
    name: TFDS name, optionally with config and version (``"mnist:3.0.1"``).
    data_dir: TFDS data directory. None selects ``$TFDS_DATA_DIR``, else
      ``~/tensorflow_datasets``.
    download: whether to download and prepare a non-embedded dataset that is
      missing from ``data_dir``.

  Returns:
    The builder, prepared in ``data_dir``.

  Raises:
    ValueError: ``name`` is not a TFDS dataset, or it is missing from
      ``data_dir`` and ``download`` is False.
  """
  builder = _get_builder(name, data_dir)
  if builder.is_prepared():
    return builder

  if builder.name in EMBEDDED_DATASETS or download:
    builder.download_and_prepare(download_config=_DOWNLOAD_CONFIG)
    return builder

  raise ValueError(
    f"dataset {name!r} not found in data_dir {str(builder.data_dir_root)!r}."
    " Prepare it in ArrayRecord format, or pass download=True where a network"
    f" is available. Known embedded datasets: {_known_names()}"
  )


def _info_from_builder(builder: tfds.core.DatasetBuilder) -> DatasetInfo:
  features = builder.info.features
  names = features.keys() if hasattr(features, "keys") else ()
  image = features["image"] if "image" in names else None
  label = features["label"] if "label" in names else None
  if not isinstance(image, tfds.features.Image) or not isinstance(
    label, tfds.features.ClassLabel
  ):
    raise ValueError(
      f"dataset {builder.name!r} is not an image-classification dataset:"
      " expected an Image feature 'image' and a ClassLabel feature 'label',"
      f" got {features}"
    )
  if None in image.shape:
    raise ValueError(
      f"dataset {builder.name!r} has images of variable shape {image.shape},"
      " but only fixed [height, width, channels] shapes are supported"
    )

  return DatasetInfo(
    name=builder.name,
    num_classes=label.num_classes,
    image_shape=tuple(image.shape),
    num_examples={
      split: info.num_examples for split, info in builder.info.splits.items()
    },
  )


def get_info(
  name: str, *, data_dir: str | None = None, download: bool = False
) -> DatasetInfo:
  """Prepare ``name`` if needed (see ``prepare``) and describe it.

  Raises:
    ValueError: as ``prepare``, or the dataset lacks an ``image`` Image
      feature of fixed shape and a ``label`` ClassLabel feature.
  """
  return _info_from_builder(prepare(name, data_dir=data_dir, download=download))


def _open_split(
  name: str, split: str, *, data_dir: str | None, download: bool
) -> tuple[Any, DatasetInfo]:
  info = get_info(name, data_dir=data_dir, download=download)
  source = tfds.data_source(
    name, split=split, data_dir=data_dir, download=False, try_gcs=False
  )
  return source, info


def load_split(
  name: str,
  split: str,
  *,
  data_dir: str | None = None,
  download: bool = False,
) -> Any:
  """Prepare ``name`` if needed (see ``prepare``) and open one split.

  Args:
    name: TFDS name, e.g. ``"digits"``, the embedded offline dataset.
    split: TFDS split, with the TFDS slicing syntax (``"train[:10%]"``).
    data_dir: TFDS data directory, as in ``prepare``.
    download: as in ``prepare``.

  Returns:
    A random-access TFDS data source: ``len(source)`` examples, and
    ``source[i]`` is ``{"image": uint8 [height, width, channels], "label":
    int}`` plus any other features of the dataset.

  Raises:
    ValueError: as ``get_info``.
  """
  source, _ = _open_split(name, split, data_dir=data_dir, download=download)
  return source


class _ProcessShard:
  """Records ``shard_index, shard_index + shard_count, ...`` of a source.

  Every process gets the same number of slots, so that multi-host steps stay
  in step: ``floor(n / shard_count)`` with ``drop_remainder``, else
  ``ceil(n / shard_count)``. A slot past the end of the source is a padding
  example (zero image, label 0) with ``mask`` False. With ``cache``, each
  decoded record is kept in memory after its first read.
  """

  def __init__(
    self,
    source: Any,
    *,
    shard_index: int,
    shard_count: int,
    drop_remainder: bool,
    image_shape: tuple[int, int, int],
    cache: bool,
  ):
    self._source = source
    self._shard_index = shard_index
    self._shard_count = shard_count
    num_records = len(source)
    if drop_remainder:
      self._length = num_records // shard_count
    else:
      self._length = (num_records + shard_count - 1) // shard_count
    self._padding = {
      "image": np.zeros(image_shape, np.uint8),
      "label": 0,
      "mask": False,
    }
    # Grain reads from several threads. Two threads may decode the same
    # record, and both store equal values, so no lock is needed.
    self._cache = [None] * self._length if cache else None

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, slot: int) -> dict[str, Any]:
    if self._cache is not None and self._cache[slot] is not None:
      return self._cache[slot]

    record_index = self._shard_index + slot * self._shard_count
    if record_index >= len(self._source):
      return self._padding
    record = self._source[record_index]
    example = {"image": record["image"], "label": record["label"], "mask": True}

    if self._cache is not None:
      self._cache[slot] = example
    return example


def _normalise(example: dict[str, Any]) -> dict[str, np.ndarray]:
  """Scale uint8 pixels to float32 in [0, 1] and fix the label dtype."""
  return {
    "image": np.asarray(example["image"], np.float32) / 255.0,
    "label": np.asarray(example["label"], np.int32),
    "mask": np.asarray(example["mask"], np.bool_),
  }


def _resolve_process(
  process_index: int | None, process_count: int | None
) -> tuple[int, int]:
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
      f"process_index must be in [0, process_count) with process_count >= 1,"
      f" got process_index={process_index}, process_count={process_count}"
    )
  return process_index, process_count


def make_loader(
  name: str,
  split: str,
  *,
  batch_size: int,
  seed: int = 0,
  data_dir: str | None = None,
  shuffle: bool = True,
  num_epochs: int | None = 1,
  drop_remainder: bool = False,
  cache: bool = False,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.IterDataset:
  """Build a Grain pipeline over this process's shard of a TFDS split.

  Process ``i`` of ``c`` reads records ``i, i + c, i + 2c, ...`` of the split
  (see ``_ProcessShard`` for how shard lengths are equalised). With
  ``shuffle``, the shard is permuted by ``seed`` with a new permutation each
  epoch, and the order is the same on every run with the same arguments.
  Epochs are concatenated before batching, so only the last batch can be
  short: ``drop_remainder`` drops it, otherwise it is padded to
  ``batch_size`` with ``mask`` False. Without ``drop_remainder``, a process
  whose shard is one record short also gets one padding example per epoch,
  at a shuffled position when ``shuffle`` is set.

  ``iter(loader)`` gives a ``grain.DatasetIterator``; its ``get_state()`` and
  ``set_state(state)`` save and restore the position, so a resumed run reads
  the same batches as an uninterrupted one.

  Args:
    name: TFDS name, as in ``load_split``. It must already be prepared in
      ``data_dir`` unless it is embedded.
    split: TFDS split, e.g. ``"train"`` or ``"test"``.
    batch_size: examples per batch on this process.
    seed: shuffle seed in ``[0, 2**32)``.
    data_dir: TFDS data directory, as in ``prepare``.
    shuffle: whether to permute the examples each epoch.
    num_epochs: passes over the shard; None repeats forever.
    drop_remainder: drop the last short batch instead of padding it.
    cache: keep this process's decoded uint8 examples in memory after the
      first epoch, for splits that fit in RAM (digits, mnist, cifar10).
    process_index: shard to read; None means ``jax.process_index()``.
    process_count: number of shards; None means ``jax.process_count()``.

  Returns:
    A ``grain.IterDataset`` of batches ``{"image": float32 [batch, height,
    width, channels] in [0, 1], "label": int32 [batch], "mask": bool
    [batch]}``, where ``mask`` is False on padding examples.

  Raises:
    ValueError: as ``load_split``; ``batch_size`` is not positive; the process
      arguments are invalid; or ``drop_remainder`` would leave no batch.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  process_index, process_count = _resolve_process(process_index, process_count)
  source, info = _open_split(name, split, data_dir=data_dir, download=False)
  shard = _ProcessShard(
    source,
    shard_index=process_index,
    shard_count=process_count,
    drop_remainder=drop_remainder,
    image_shape=info.image_shape,
    cache=cache,
  )
  if drop_remainder and len(shard) < batch_size:
    raise ValueError(
      f"batch_size {batch_size} exceeds the {len(shard)} examples per process"
      f" of {name!r} split {split!r}. Lower batch_size or set"
      " drop_remainder=False."
    )

  dataset = grain.MapDataset.source(shard)
  if shuffle:
    dataset = dataset.shuffle(seed=seed)
  dataset = dataset.repeat(num_epochs).map(_normalise)

  if drop_remainder:
    dataset = dataset.batch(batch_size, drop_remainder=True)
  else:
    pad_batch = functools.partial(
      grain.experimental.batch_and_pad, batch_size=batch_size
    )
    dataset = dataset.batch(batch_size, batch_fn=pad_batch)
  return dataset.to_iter_dataset()
