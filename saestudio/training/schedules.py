"""Learning-rate and sparsity-coefficient schedules as pure functions of the step.

Pure functions (instead of a stateful ``torch.optim.lr_scheduler``) mean a resumed run
needs only its step number to continue on exactly the same schedule.
"""

from __future__ import annotations

import math

ONECYCLE_WARMUP_FRACTION = 0.3


def lr_at(
    step: int,
    *,
    lr: float,
    total_steps: int,
    schedule: str,
    warmup_steps: int = 0,
    decay_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> float:
    """Learning rate for optimiser step ``step`` (0-based)."""
    if schedule == "onecycle" and warmup_steps == 0:
        warmup_steps = max(1, round(ONECYCLE_WARMUP_FRACTION * total_steps))
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    floor = lr * min_lr_ratio
    if schedule == "constant":
        decay_start = total_steps - decay_steps
        if decay_steps and step >= decay_start:
            frac = (step - decay_start + 1) / decay_steps
            return lr + (floor - lr) * frac
        return lr
    span = max(1, total_steps - warmup_steps)
    frac = min(1.0, (step - warmup_steps + 1) / span)
    if schedule == "linear":
        return lr + (floor - lr) * frac
    if schedule in ("cosine", "onecycle"):
        return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * frac))
    raise ValueError(f"lr_schedule: unknown schedule {schedule!r}")


def sparsity_at(step: int, *, coefficient: float, warmup_steps: int) -> float:
    """λ for step ``step``: linear warm-up from 0 over ``warmup_steps`` (SAELens, Gemma Scope)."""
    if warmup_steps and step < warmup_steps:
        return coefficient * (step + 1) / warmup_steps
    return coefficient
