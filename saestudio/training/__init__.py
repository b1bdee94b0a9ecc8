"""Training: the config, the trainer loop, schedules, metrics and checkpoints."""

from saestudio.training.callbacks import TrainerCallback
from saestudio.training.config import TrainConfig, resolve
from saestudio.training.trainer import Trainer, TrainingDiverged, TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerCallback",
    "TrainingDiverged",
    "resolve",
    "train",
]
