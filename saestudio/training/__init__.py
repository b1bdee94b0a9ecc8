"""Training: the config, the trainer loop, schedules, metrics and checkpoints.

The names below load on first use (PEP 562), so ``saestudio.training.config`` imports
neither torch nor an architecture.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerCallback",
    "TrainingDiverged",
    "resolve",
    "train",
]
