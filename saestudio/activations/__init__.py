"""Activation data: on-disk arrays, the shuffled training stream, synthetic ground truth.

The names below load on first use (PEP 562), so ``saestudio.activations.config`` (the
extraction config) imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from saestudio._lazy import lazy_attributes

if TYPE_CHECKING:
    from saestudio.activations.buffer import Batch, ShuffledStream
    from saestudio.activations.store import ArrayDataset, DataError

_WHERE = {
    "ArrayDataset": "store",
    "Batch": "buffer",
    "DataError": "store",
    "ShuffledStream": "buffer",
}

__getattr__ = lazy_attributes(__name__, _WHERE)

__all__ = ["ArrayDataset", "Batch", "DataError", "ShuffledStream"]
