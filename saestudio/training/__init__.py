"""Training: the config, the trainer loop, schedules, metrics and checkpoints.

The names below load on first use (PEP 562), so ``saestudio.training.config`` imports
neither torch nor an architecture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from saestudio._lazy import lazy_attributes

if TYPE_CHECKING:
    from saestudio.training.callbacks import TrainerCallback
    from saestudio.training.config import TrainConfig, resolve
    from saestudio.training.trainer import Trainer, TrainingDiverged, TrainResult, train

_WHERE = {
    "TrainConfig": "config",
    "TrainResult": "trainer",
    "Trainer": "trainer",
    "TrainerCallback": "callbacks",
    "TrainingDiverged": "trainer",
    "resolve": "config",
    "train": "trainer",
}


__getattr__ = lazy_attributes(__name__, _WHERE)


__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerCallback",
    "TrainingDiverged",
    "resolve",
    "train",
]
