"""Run under torchrun by tests/integration/test_ddp.py: train a config (a JSON file) and
pause at a given step on every rank, the way a user's pause reaches a running job."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from saestudio.training import TrainConfig, TrainerCallback, train
from saestudio.training.distributed import shutdown


class PauseAt(TrainerCallback):
    def __init__(self, at: int):
        self.at, self.step = at, 0

    def on_step(self, step: int) -> None:
        self.step = step

    def should_pause(self) -> bool:
        return self.step >= self.at


if __name__ == "__main__":
    cfg = TrainConfig.model_validate(json.loads(Path(sys.argv[1]).read_text()))
    result = train(cfg, [PauseAt(int(sys.argv[2]))])
    shutdown()
    print(f"{result.status} {result.step}")
