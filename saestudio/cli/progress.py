"""Terminal progress for the CLI: a tqdm bar with loss, L0, FVU, tokens/s and ETA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from saestudio.training.callbacks import TrainerCallback


class ProgressCallback(TrainerCallback):
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar: tqdm | None = None
        self._stop = False

    def request_stop(self) -> None:
        """First Ctrl-C: checkpoint at the end of this step and stop cleanly."""
        if self._stop:
            raise KeyboardInterrupt
        self._stop = True
        if self.bar is not None:
            self.bar.write("stopping after this step (checkpointing)… Ctrl-C again to abort")

    def should_stop(self) -> bool:
        return self._stop

    def on_start(self, *, step: int, total_steps: int, resolved: dict[str, Any]) -> None:
        if self.quiet:
            return
        sae = resolved["sae"]
        self.bar = tqdm(
            total=total_steps,
            initial=step,
            desc=f"{sae['architecture']} d_sae={sae['d_sae']}",
            unit="step",
            dynamic_ncols=True,
        )

    def on_step(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def on_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        if self.bar is None or "loss" not in metrics:
            return
        self.bar.set_postfix(
            {
                "loss": f"{metrics['loss']:.4g}",
                "L0": f"{metrics['l0']:.1f}",
                "FVU": f"{metrics['fvu']:.3f}",
                "dead": f"{metrics['dead_fraction']:.0%}",
                "tok/s": f"{metrics['tokens_per_s']:,.0f}",
            },
            refresh=False,
        )

    def on_checkpoint(self, step: int, path: Path, is_best: bool) -> None:
        if self.bar is not None and not self.quiet:
            self.bar.write(f"checkpoint step {step}{' (best so far)' if is_best else ''}: {path}")

    def on_end(self, status: str, step: int) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
