"""TFDS builder for the UCI handwritten digits bundled with scikit-learn.

Preparing it reads only files installed with scikit-learn, so it needs no
network, and it needs no TensorFlow because images are PNG-encoded with PIL.
"""

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from sklearn import datasets as sk_datasets
from sklearn import model_selection

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
NUM_TEST_EXAMPLES = 360
SPLIT_SEED = 0

# The UCI pixels count the "on" pixels of a 4x4 block, so they lie in 0..16.
_MAX_PIXEL_COUNT = 16


def split_indices() -> dict[str, np.ndarray]:
  """Split the 1,797 scikit-learn digits into train and test examples.

  The split is ``sklearn.model_selection.train_test_split`` over the example
  indices with ``test_size=360``, ``stratify`` set to the labels and
  ``random_state=0``, so each class keeps its share in both splits. It gives
  1,437 train and 360 test examples.

  Returns:
    ``{"train": [1437], "test": [360]}``, sorted indices into the arrays of
    ``sklearn.datasets.load_digits()``.
  """
  labels = sk_datasets.load_digits().target
  train, test = model_selection.train_test_split(
    np.arange(len(labels)),
    test_size=NUM_TEST_EXAMPLES,
    stratify=labels,
    random_state=SPLIT_SEED,
  )
  return {"train": np.sort(train), "test": np.sort(test)}


def to_uint8(counts: np.ndarray) -> np.ndarray:
  """Scale pixel counts in 0..16 to uint8 in 0..255.

  .. math:: v_{uint8} = \\mathrm{round}(255 v / 16)

  The map is one to one on 0..16, so no information is lost.

  Args:
    counts: ``[height, width]`` pixel counts, any numeric dtype.

  Returns:
    ``[height, width]`` uint8 values.
  """
  scaled = np.rint(np.asarray(counts, np.float64) * 255.0 / _MAX_PIXEL_COUNT)
  return scaled.astype(np.uint8)


class Digits(tfds.core.GeneratorBasedBuilder):
  """UCI digits: 8x8 grey images of the digits 0-9 with a fixed split.

  Features are ``image``, uint8 ``[8, 8, 1]`` scaled from 0..16 to 0..255 by
  ``to_uint8``, and ``label``, ``ClassLabel(num_classes=10)``. The example key
  is the index into ``sklearn.datasets.load_digits()``. ``split_indices``
  documents the train/test split.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Stratified 1,437/360 split, random_state=0."}

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo is built directly because `dataset_info_from_configs` reads
    # metadata files next to the builder's module, and there are none here.
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        "Test set of the UCI optical recognition of handwritten digits data,"
        " as bundled by scikit-learn (sklearn.datasets.load_digits)."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8),
          "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }
      ),
      supervised_keys=("image", "label"),
      homepage=(
        "https://archive.ics.uci.edu/ml/datasets/"
        "Optical+Recognition+of+Handwritten+Digits"
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The data comes with scikit-learn.
    return {
      split: self._generate_examples(indices)
      for split, indices in split_indices().items()
    }

  def _generate_examples(self, indices: np.ndarray):
    digits = sk_datasets.load_digits()
    for index in indices:
      # TFDS encodes a PIL image with PIL. It would encode a NumPy array with
      # tf.image.encode_png, which needs TensorFlow.
      image = Image.fromarray(to_uint8(digits.images[index]))
      yield int(index), {"image": image, "label": int(digits.target[index])}
