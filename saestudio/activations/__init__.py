"""Activation data: on-disk arrays, the shuffled training stream, synthetic ground truth."""

from saestudio.activations.buffer import Batch, ShuffledStream
from saestudio.activations.store import ArrayDataset, DataError

__all__ = ["ArrayDataset", "Batch", "DataError", "ShuffledStream"]
