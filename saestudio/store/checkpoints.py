"""Checkpoint rows of a run: one per (training, SAE, step), the best flagged per SAE.

The files live under the run's folder; these rows are what the API lists, protects and
resumes from. Deleting returns the rows so the caller removes the folders.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from saestudio.store._common import dialect_insert, relative_path
from saestudio.store.models import Checkpoint, utcnow
from saestudio.store.states import BestCheckpointProtected, NotFound


def add_checkpoint(
    session: Session,
    training_id: int,
    *,
    sae: str,
    step: int,
    path: str,
    is_best: bool = False,
    eval_loss: float | None = None,
    size_bytes: int | None = None,
) -> Checkpoint:
    """Record a checkpoint (upsert on training, SAE, step: a redelivered job rewrites
    the same checkpoint). ``is_best`` takes the flag from the SAE's previous best."""
    if is_best:
        session.execute(
            update(Checkpoint)
            .where(Checkpoint.training_id == training_id, Checkpoint.sae == sae)
            .values(is_best=False)
        )
    values = {
        "path": relative_path(path),
        "is_best": is_best,
        "eval_loss": eval_loss,
        "size_bytes": size_bytes,
    }
    stmt = dialect_insert(session)(Checkpoint.__table__).values(
        training_id=training_id, sae=sae, step=step, created_at=utcnow(), **values
    )
    stmt = stmt.on_conflict_do_update(index_elements=["training_id", "sae", "step"], set_=values)
    session.execute(stmt)
    found = session.scalars(
        select(Checkpoint)
        .where(
            Checkpoint.training_id == training_id, Checkpoint.sae == sae, Checkpoint.step == step
        )
        .execution_options(populate_existing=True)
    ).one()
    return found


def list_checkpoints(
    session: Session, training_id: int, sae: str | None = None
) -> list[Checkpoint]:
    """A run's checkpoints by SAE, then step."""
    stmt = select(Checkpoint).where(Checkpoint.training_id == training_id)
    if sae is not None:
        stmt = stmt.where(Checkpoint.sae == sae)
    return list(session.scalars(stmt.order_by(Checkpoint.sae, Checkpoint.step)))


def get_checkpoint(
    session: Session, checkpoint_id: int, training_id: int | None = None
) -> Checkpoint:
    """The checkpoint, or NotFound (also when it belongs to another run)."""
    row = session.get(Checkpoint, checkpoint_id)
    if row is None or (training_id is not None and row.training_id != training_id):
        raise NotFound("checkpoint", checkpoint_id)
    return row


def best_checkpoints(
    session: Session, training_id: int, sae: str | None = None
) -> list[Checkpoint]:
    """The best checkpoint of each SAE of the run (of ``sae`` only if given)."""
    stmt = select(Checkpoint).where(Checkpoint.training_id == training_id, Checkpoint.is_best)
    if sae is not None:
        stmt = stmt.where(Checkpoint.sae == sae)
    return list(session.scalars(stmt.order_by(Checkpoint.sae)))


def delete_checkpoint(
    session: Session,
    checkpoint_id: int,
    *,
    training_id: int | None = None,
    allow_best: bool = False,
) -> Checkpoint:
    """Delete a checkpoint row and return it (the caller removes its folder). The best
    one is refused with :class:`BestCheckpointProtected` unless ``allow_best``."""
    row = get_checkpoint(session, checkpoint_id, training_id)
    if row.is_best and not allow_best:
        raise BestCheckpointProtected(
            f"checkpoint {checkpoint_id} is the best of {row.sae!r}: confirm to delete it"
        )
    session.delete(row)
    session.flush()
    return row


def delete_checkpoints_after(session: Session, training_id: int, step: int) -> list[Checkpoint]:
    """Drop rows of checkpoints after ``step`` (a run resumed from an earlier checkpoint
    overwrites that future); returns them so the caller removes the folders."""
    rows = list(
        session.scalars(
            select(Checkpoint).where(Checkpoint.training_id == training_id, Checkpoint.step > step)
        )
    )
    for row in rows:
        session.delete(row)
    session.flush()
    return rows


def forget_checkpoints(
    session: Session, training_id: int, sae: str, keep: Callable[[str], bool]
) -> list[Checkpoint]:
    """Drop the rows of one SAE's checkpoints for which ``keep(path)`` is false (the
    trainer's retention policy deleted their folders); returns them."""
    rows = [
        row
        for row in session.scalars(
            select(Checkpoint).where(Checkpoint.training_id == training_id, Checkpoint.sae == sae)
        )
        if not keep(row.path)
    ]
    for row in rows:
        session.delete(row)
    session.flush()
    return rows
