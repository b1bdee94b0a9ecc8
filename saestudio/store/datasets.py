"""Activation datasets: the extraction job that writes one, and its folder's summary."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from saestudio.store import lifecycle
from saestudio.store._common import (
    Page,
    add_unique,
    check_changes,
    dump_config,
    get_or_raise,
    paged,
    relative_path,
    status_filter,
)
from saestudio.store.lifecycle import Heartbeat
from saestudio.store.models import ActivationDataset
from saestudio.store.states import InvalidTransition

WHAT = "activation dataset"
UPDATABLE = ("name", "manifest", "celery_task_id", "target_contexts")
PROGRESS = ("contexts", "target_contexts", "rows", "progress", "manifest")


def create_dataset(
    session: Session,
    config: BaseModel | Mapping[str, Any],
    *,
    name: str,
    path: str,
    target_contexts: int | None = None,
) -> ActivationDataset:
    """A queued extraction into ``path`` (relative to the data dir) for an
    ``ExtractConfig``. A taken name → :class:`NameTaken`."""
    row = ActivationDataset(
        name=name,
        path=relative_path(path),
        status="queued",
        config=dump_config(config),
        target_contexts=target_contexts,
    )
    add_unique(session, row, WHAT, name)
    return row


def get_dataset(session: Session, dataset_id: int) -> ActivationDataset:
    """The dataset, or :class:`NotFound`."""
    return get_or_raise(session, ActivationDataset, dataset_id, WHAT)


def get_dataset_by_name(session: Session, name: str) -> ActivationDataset | None:
    return session.scalar(select(ActivationDataset).where(ActivationDataset.name == name))


def list_datasets(
    session: Session,
    *,
    status: str | Collection[str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[ActivationDataset]:
    """Datasets newest first, optionally only those in ``status``."""
    stmt = (
        select(ActivationDataset)
        .where(*status_filter(ActivationDataset.status, status))
        .order_by(ActivationDataset.created_at.desc(), ActivationDataset.id.desc())
    )
    return paged(session, stmt, limit, offset)


def update_dataset(session: Session, dataset_id: int, **changes: Any) -> ActivationDataset:
    """Set plain fields (``name``, ``manifest``, ``celery_task_id``, ``target_contexts``)."""
    check_changes(changes, UPDATABLE, WHAT)
    row = get_dataset(session, dataset_id)
    for key, value in changes.items():
        setattr(row, key, value)
    add_unique(session, row, WHAT, str(changes.get("name", row.name)))
    return row


def set_dataset_status(
    session: Session,
    dataset_id: int,
    new: str,
    *,
    error: str | None = None,
    worker: str | None = None,
    **fields: Any,
) -> ActivationDataset:
    """Move an extraction to ``new`` and set progress ``fields`` (``contexts``,
    ``target_contexts``, ``rows``, ``progress``, ``manifest``) in one UPDATE; else
    :class:`InvalidTransition`. ``worker``: only while that worker owns it."""
    check_changes(fields, PROGRESS, WHAT)
    if new == "completed":
        fields.setdefault("progress", 1.0)
    return lifecycle.set_status(
        session, ActivationDataset, dataset_id, new, error=error, worker=worker, fields=fields
    )


def claim_dataset(
    session: Session,
    dataset_id: int,
    worker: str,
    *,
    task_id: str | None = None,
    stale_after_s: float | None = None,
) -> ActivationDataset | None:
    """Atomically take a queued extraction; None when it is not claimable."""
    return lifecycle.claim(
        session, ActivationDataset, dataset_id, worker, task_id=task_id, stale_after_s=stale_after_s
    )


def dataset_heartbeat(session: Session, dataset_id: int, worker: str, **progress: Any) -> Heartbeat:
    """Record the extracting worker alive, with ``progress`` fields; ``owned=False``
    when it must stop (cancelled, deleted, taken over)."""
    check_changes(progress, PROGRESS, WHAT)
    return lifecycle.beat(session, ActivationDataset, dataset_id, worker, progress)


def stale_extractions(session: Session, older_than_seconds: float) -> list[ActivationDataset]:
    """``running`` extractions whose worker stopped heartbeating this long ago."""
    return lifecycle.stale(session, ActivationDataset, older_than_seconds)


def requeue_stale_extractions(
    session: Session, older_than_seconds: float
) -> list[ActivationDataset]:
    """Crash recovery for extractions (they continue from their last whole shard)."""
    return lifecycle.requeue_stale(session, ActivationDataset, older_than_seconds)


def request_dataset_control(
    session: Session, dataset_id: int, action: str
) -> lifecycle.ControlOutcome[ActivationDataset]:
    """``pause | resume | stop`` an extraction (there is nothing to finalize)."""
    if action == "stop_and_finalize":
        raise InvalidTransition("an extraction cannot be finalized: stop or pause it")
    return lifecycle.request_control(session, ActivationDataset, dataset_id, action)


def delete_datasets(
    session: Session, dataset_ids: Sequence[int], *, force: bool = False
) -> list[ActivationDataset]:
    """Delete dataset rows (trainings keep running from their own config; their
    ``dataset_id`` becomes NULL). Returns the rows so the caller removes the folders.
    A running extraction is refused unless ``force``."""
    rows = list(
        session.scalars(
            select(ActivationDataset).where(ActivationDataset.id.in_(list(dataset_ids)))
        )
    )
    running = [r.id for r in rows if r.status == "running"]
    if running and not force:
        raise InvalidTransition(f"activation datasets {running} are extracting: stop them first")
    if rows:
        session.execute(
            delete(ActivationDataset)
            .where(ActivationDataset.id.in_([r.id for r in rows]))
            .execution_options(synchronize_session=False)
        )
        for row in rows:
            session.expunge(row)
    return rows
