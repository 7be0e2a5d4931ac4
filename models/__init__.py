"""Flax NNX models used by the experiments."""

from models.cnn import CNN
from models.mlp import MLP

__all__ = ["CNN", "MLP"]
