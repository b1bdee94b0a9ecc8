"""Helpers shared by the store's integration tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from saestudio.store import repo
from saestudio.store.models import Base
from saestudio.training.config import TrainConfig


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "activations": "activations/demo",
        "hook": ["resid_post.3"],
        "sae": {"architecture": "topk", "d_sae": 64, "k": 8},
        "steps": 100,
        "out": "runs/x",
    }
    return TrainConfig(**{**base, **kw})


def new_run(s: Session, name: str = "run", **kw: Any) -> int:
    return repo.create_training(s, config(**kw), name=name).id


def train_line(step: int, sae: str = "sae", loss: float = 1.0) -> dict[str, Any]:
    return {"step": step, "sae": sae, "loss": loss, "l0": 8.0, "fvu": 0.2, "lr": 1e-3}


def count(s: Session, model: type[Base], **where: Any) -> int:
    stmt = select(func.count()).select_from(model).filter_by(**where)
    return int(s.scalar(stmt) or 0)
