"""Trainings: create / list / update / delete, and their life (status, control,
claims, heartbeats, crash recovery) through :mod:`saestudio.store.lifecycle`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, delete, exists, func, literal, select
from sqlalchemy.orm import Session

from saestudio.store import lifecycle
from saestudio.store._common import (
    Page,
    check_changes,
    get_or_raise,
    paged,
    relative_path,
    status_filter,
)
from saestudio.store.lifecycle import Heartbeat
from saestudio.store.models import Checkpoint, Training
from saestudio.store.states import InvalidTransition

if TYPE_CHECKING:
    from saestudio.training.config import TrainConfig

WHAT = "training"
UPDATABLE = ("name", "celery_task_id", "d_sae", "total_steps", "dataset_id")
PROGRESS = ("step", "total_steps", "d_sae", "latest_metrics", "eta_seconds", "exports")
BEAT = ("step", "total_steps", "d_sae", "latest_metrics", "eta_seconds")


def create_training(
    session: Session,
    config: TrainConfig,
    *,
    name: str,
    out_dir: str | None = None,
    dataset_id: int | None = None,
    parent_id: int | None = None,
) -> Training:
    """A queued run for a validated config in the folder ``out_dir`` (relative to the
    data dir; default ``config.out``). The folder is stored once, in ``out_dir``: the stored config has no
    ``out`` (:meth:`saestudio.store.jobstore.SqlJobStore.training_job` sets it)."""
    row = Training(
        name=name,
        status="queued",
        config=config.model_dump(mode="json", exclude={"out"}),
        architecture=config.sae.architecture,
        d_sae=config.sae.d_sae,
        total_steps=config.total_steps,
        out_dir=relative_path(out_dir or config.out, "out_dir"),
        dataset_id=dataset_id,
        parent_id=parent_id,
    )
    session.add(row)
    session.flush()
    return row


def get_training(session: Session, training_id: int) -> Training:
    """The run, or :class:`NotFound`."""
    return get_or_raise(session, Training, training_id, WHAT)


def list_trainings(
    session: Session,
    *,
    status: str | Collection[str] | None = None,
    dataset_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[Training]:
    """Runs newest first, optionally only those in ``status`` (one or several)."""
    stmt = select(Training).where(*status_filter(Training.status, status))
    if dataset_id is not None:
        stmt = stmt.where(Training.dataset_id == dataset_id)
    stmt = stmt.order_by(Training.created_at.desc(), Training.id.desc())
    return paged(session, stmt, limit, offset)


def update_training(session: Session, training_id: int, **changes: Any) -> Training:
    """Set plain fields (``name``, ``celery_task_id``, ``d_sae``, ``total_steps``,
    ``dataset_id``). Status and control change only through the functions below."""
    check_changes(changes, UPDATABLE, WHAT)
    row = get_training(session, training_id)
    for key, value in changes.items():
        setattr(row, key, value)
    session.flush()
    return row


def delete_trainings(
    session: Session, training_ids: Sequence[int], *, force: bool = False
) -> list[Training]:
    """Delete runs with their metrics and checkpoint rows (``ON DELETE CASCADE``).

    Returns the deleted rows so the caller can remove their folders and revoke jobs;
    unknown ids are skipped. A ``running`` run is refused unless ``force``: its worker
    would go on writing rows for it (with ``force`` its next heartbeat says not owned).
    """
    rows = list(session.scalars(select(Training).where(Training.id.in_(list(training_ids)))))
    running = [r.id for r in rows if r.status == "running"]
    if running and not force:
        raise InvalidTransition(f"trainings {running} are running: stop them first")
    if rows:
        session.execute(
            delete(Training)
            .where(Training.id.in_([r.id for r in rows]))
            .execution_options(synchronize_session=False)
        )
        for row in rows:
            session.expunge(row)
    return rows


def set_status(
    session: Session,
    training_id: int,
    new: str,
    *,
    error: str | None = None,
    worker: str | None = None,
    **fields: Any,
) -> Training:
    """Move a run to ``new`` (:func:`can_transition`; re-reporting the current status is
    allowed) and set ``fields`` (``step``, ``total_steps``, ``d_sae``, ``latest_metrics``,
    ``eta_seconds``, ``exports``) in the same UPDATE; else :class:`InvalidTransition`.
    ``worker``: only while that worker owns the run. ``error`` None clears the error."""
    check_changes(fields, PROGRESS, WHAT)
    if "exports" in fields and fields["exports"] is not None:
        fields["exports"] = {k: relative_path(v, "exports") for k, v in fields["exports"].items()}
    return lifecycle.set_status(
        session, Training, training_id, new, error=error, worker=worker, fields=_progress(fields)
    )


def _progress(fields: dict[str, Any]) -> dict[str, Any]:
    """``progress`` follows ``step`` (computed in SQL from the stored ``total_steps``)."""
    if fields.get("step") is not None:
        step = int(fields["step"])
        total = fields.get("total_steps")
        if total is not None:
            fields["progress"] = min(step / total, 1.0) if total > 0 else 0.0
        else:
            ratio = literal(float(step), Float) / func.nullif(Training.total_steps, 0)
            fields["progress"] = func.coalesce(ratio, Training.progress)
    return fields


def claim(
    session: Session,
    training_id: int,
    worker: str,
    *,
    task_id: str | None = None,
    stale_after_s: float | None = None,
) -> Training | None:
    """Atomically take a queued run (or, with ``stale_after_s``, a ``running`` one whose
    worker died); None when it is not claimable: drop the task."""
    return lifecycle.claim(
        session, Training, training_id, worker, task_id=task_id, stale_after_s=stale_after_s
    )


def heartbeat(
    session: Session,
    training_id: int,
    worker: str,
    *,
    step: int | None = None,
    total_steps: int | None = None,
    latest_metrics: dict[str, Any] | None = None,
    eta_seconds: float | None = None,
    d_sae: int | None = None,
) -> Heartbeat:
    """Record that ``worker`` is alive, with its progress, in one UPDATE; returns any
    pending control request, or ``owned=False`` when the worker must stop."""
    values: dict[str, Any] = {}
    if step is not None:
        values["step"] = step
    if total_steps is not None:
        values["total_steps"] = total_steps
    if latest_metrics is not None:
        values["latest_metrics"] = latest_metrics
    if eta_seconds is not None:
        values["eta_seconds"] = eta_seconds
    if d_sae is not None:  # resolved from the data's width once the job starts
        values["d_sae"] = d_sae
    return lifecycle.beat(session, Training, training_id, worker, _progress(values))


def stale_running(session: Session, older_than_seconds: float) -> list[Training]:
    """Runs marked ``running`` whose worker has not heartbeated for this long."""
    return lifecycle.stale(session, Training, older_than_seconds)


def requeue_stale(session: Session, older_than_seconds: float) -> list[Training]:
    """Crash recovery: stale running runs back to ``queued`` (each at most once across
    concurrent watchdogs); returns those moved, for the caller to enqueue."""
    return lifecycle.requeue_stale(session, Training, older_than_seconds)


def request_control(
    session: Session, training_id: int, action: str
) -> lifecycle.ControlOutcome[Training]:
    """A user's ``pause | resume | stop | stop_and_finalize``; :class:`InvalidTransition`
    when not allowed now (e.g. pause on a completed run). ``enqueue`` in the result:
    the run went back to ``queued`` and the caller must send a task for it."""
    has_ckpt = bool(session.scalar(select(exists().where(Checkpoint.training_id == training_id))))
    return lifecycle.request_control(
        session, Training, training_id, action, has_checkpoint=has_ckpt
    )
