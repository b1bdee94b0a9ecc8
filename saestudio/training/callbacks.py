"""How the trainer reports: a small observer interface the CLI and the service plug into.

The trainer knows nothing about databases, queues or terminals; it calls these hooks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class TrainerCallback:
    """Override what you need; every hook is optional."""

    def on_start(self, *, step: int, total_steps: int, resolved: dict[str, Any]) -> None:
        """Called once, after setup (``step`` > 0 when resuming)."""

    def on_step(self, step: int) -> None:
        """Called after every optimiser step (``step`` = steps done). Must be cheap."""

    def on_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        """A metrics line (every ``log_every`` steps, plus evaluation lines)."""

    def on_checkpoint(self, step: int, path: Path, is_best: bool) -> None:
        """A checkpoint was written."""

    def should_pause(self) -> bool:
        """Polled every step: True → checkpoint and return with status ``paused``."""
        return False

    def should_stop(self) -> bool:
        """Polled every step: True → checkpoint and return with status ``stopped``."""
        return False

    def on_end(self, status: str, step: int) -> None:
        """The run ended (completed, paused, stopped or failed)."""


class MetricsFile(TrainerCallback):
    """Appends every metrics line as JSON to ``metrics.jsonl``; on resume, lines after the
    checkpoint's step are dropped first so the file reads as one uninterrupted run."""

    def __init__(self, path: Path):
        self.path = path

    def on_start(self, *, step: int, total_steps: int, resolved: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    def on_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
