"""The life of a job row (a training, an extraction or an inspection): status transitions, the user's
control requests, worker claims, heartbeats and crash recovery.

Every change is one conditional UPDATE (compare-and-set on status, control and owner):
the API, the worker running the job and a watchdog can race on a row and exactly one
wins, on SQLite as on PostgreSQL, without row locks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from saestudio.store._common import conditional_update, refresh
from saestudio.store.models import ActivationDataset, Inspection, Training, utcnow
from saestudio.store.states import ACTIONS, FINISHED, STATUSES, InvalidTransition, sources_of

J = TypeVar("J", Training, ActivationDataset, Inspection)


class ControlOutcome(NamedTuple, Generic[J]):
    """What :func:`request_control` did."""

    row: J
    """The job after the request."""
    enqueue: bool
    """True when the job went back to ``queued``: the caller must send a task for it."""


class Heartbeat(NamedTuple):
    """What a worker learns from a heartbeat."""

    owned: bool
    """False when this worker no longer runs the job (taken over, stopped, deleted)."""
    control: str | None
    """A pending user request (pause / stop / stop_and_finalize) to honour now."""


_WHAT: dict[type, str] = {
    Training: "training",
    ActivationDataset: "activation dataset",
    Inspection: "inspection",
}


def _what(model: type[Training] | type[ActivationDataset] | type[Inspection]) -> str:
    return _WHAT[model]


def set_status(
    session: Session,
    model: type[J],
    ident: int,
    new: str,
    *,
    error: str | None = None,
    worker: str | None = None,
    fields: dict[str, Any] | None = None,
) -> J:
    """Move a job to ``new`` (and set ``fields`` in the same UPDATE) if the state machine
    allows it, else :class:`InvalidTransition`. Re-reporting the current status is
    allowed (a redelivered job repeats itself). ``error`` replaces the stored error.
    ``worker``: only while this worker owns the job, so a worker presumed dead and
    replaced cannot overwrite what its successor reports."""
    if new not in STATUSES:
        raise ValueError(f"status: unknown {new!r}; one of {STATUSES}")
    now = utcnow()
    values: dict[str, Any] = {**(fields or {}), "status": new, "error": error}
    if new == "running":
        values.update(started_at=func.coalesce(model.started_at, now), heartbeat_at=now)
    elif new == "queued":
        # a pending stop survives a re-queue (the next claim applies it); the owner does not
        values.update(worker=None, heartbeat_at=None, finished_at=None)
    elif new == "paused":
        values["control"] = None
    else:
        values.update(control=None, finished_at=func.coalesce(model.finished_at, now))
    where: list[Any] = [model.status.in_([*sources_of(new), new])]
    if worker is not None:
        where.append(model.worker == worker)
    if not conditional_update(session, model, ident, where, values):
        row = refresh(session, model, ident, _what(model))
        if worker is not None and row.worker != worker:
            raise InvalidTransition(
                f"{_what(model)} {ident} is run by {row.worker!r}, not {worker!r}",
                current=row.status,
            )
        raise InvalidTransition(
            f"{_what(model)} {ident} is {row.status}; it cannot become {new}", current=row.status
        )
    return refresh(session, model, ident, _what(model))


def _stale(model: type[J], cutoff: datetime) -> Any:
    # a job claimed but never heartbeated falls back on when it started
    last = func.coalesce(model.heartbeat_at, model.started_at, model.created_at)
    return and_(model.status == "running", last < cutoff)


def claim(
    session: Session,
    model: type[J],
    ident: int,
    worker: str,
    *,
    task_id: str | None = None,
    stale_after_s: float | None = None,
) -> J | None:
    """Atomically take a queued job (``running``, owned by ``worker``); None when it is
    not claimable (paused, cancelled, deleted, running elsewhere): drop the task.

    ``stale_after_s``: also take over a ``running`` job whose heartbeat is older than
    this — a redelivered task (Celery ``acks_late``) whose first worker died."""
    now = utcnow()
    claimable: Any = model.status == "queued"
    if stale_after_s is not None:
        claimable = or_(claimable, _stale(model, now - timedelta(seconds=stale_after_s)))
    values: dict[str, Any] = {
        "status": "running",
        "worker": worker,
        "heartbeat_at": now,
        "started_at": func.coalesce(model.started_at, now),
        "finished_at": None,
        "error": None,
        "attempts": model.attempts + 1,
    }
    if task_id is not None:
        values["celery_task_id"] = task_id
    if not conditional_update(session, model, ident, [claimable], values):
        return None
    return refresh(session, model, ident, _what(model))


def beat(
    session: Session, model: type[J], ident: int, worker: str, values: dict[str, Any]
) -> Heartbeat:
    """Record ``worker`` alive (with progress ``values``) in one UPDATE … RETURNING,
    which also hands back the pending request: the worker polls the user's wishes in
    the same round trip."""
    stmt = (
        update(model)
        .where(model.id == ident, model.status == "running", model.worker == worker)
        .values(heartbeat_at=utcnow(), **values)
        .returning(model.control)
        # "fetch": a copy of the row already loaded in this session sees the new values
        .execution_options(synchronize_session="fetch")
    )
    found = session.execute(stmt).first()
    return Heartbeat(False, None) if found is None else Heartbeat(True, found[0])


def stale(session: Session, model: type[J], older_than_seconds: float) -> list[J]:
    """Jobs marked ``running`` whose worker has not heartbeated for this long: their
    worker died (kill -9, lost machine). Compares the hosts' clocks: keep the threshold
    well above the heartbeat period plus any clock skew."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    stmt = select(model).where(_stale(model, cutoff)).order_by(model.id)
    return list(session.scalars(stmt))


def requeue_stale(session: Session, model: type[J], older_than_seconds: float) -> list[J]:
    """Move every stale ``running`` job back to ``queued`` and return those this call
    moved (the caller enqueues them; the job resumes from its last checkpoint). Each
    move re-checks staleness, so watchdogs on several machines never requeue twice."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    moved = []
    for row in stale(session, model, older_than_seconds):
        note = f"worker {row.worker or '?'} stopped heartbeating; re-queued to resume"
        values = {"status": "queued", "worker": None, "heartbeat_at": None, "error": note}
        if conditional_update(session, model, row.id, [_stale(model, cutoff)], values):
            moved.append(refresh(session, model, row.id, _what(model)))
    return moved


def requeue_worker(session: Session, model: type[J], worker: str) -> list[J]:
    """Move every ``running`` job owned by ``worker`` back to ``queued`` at once, without
    waiting for its heartbeat to go stale: the caller knows that worker is gone (the
    server's own local worker, from before a restart). Returns the jobs moved, for the
    caller to enqueue; each move re-checks the owner, so a job another worker took
    meanwhile stays with it."""
    moved = []
    owned = and_(model.status == "running", model.worker == worker)
    for ident in session.scalars(select(model.id).where(owned).order_by(model.id)).all():
        note = f"worker {worker} ended with the server; re-queued to resume"
        values = {"status": "queued", "worker": None, "heartbeat_at": None, "error": note}
        if conditional_update(session, model, ident, [owned], values):
            moved.append(refresh(session, model, ident, _what(model)))
    return moved


def _plan(
    row: Training | ActivationDataset | Inspection, action: str, has_checkpoint: bool
) -> dict[str, Any]:
    """Column values for ``action`` on ``row`` now, or InvalidTransition."""
    status, control = row.status, row.control
    if action == "pause":
        if status == "running" and control in (None, "pause"):
            return {"control": "pause"}
        if status == "queued":
            return {"status": "paused", "control": None}
    elif action == "resume":
        if status in ("paused", "failed", "cancelled"):
            reopen = {"worker": None, "heartbeat_at": None, "finished_at": None, "error": None}
            return {"status": "queued", "control": None, **reopen}
        if status == "running" and control == "pause":  # withdraw a pause not yet honoured
            return {"control": None}
    elif action == "stop":
        if status == "running":
            return {"control": "stop"}
        if status in ("queued", "paused"):
            return {"status": "cancelled", "control": None, "finished_at": utcnow()}
    elif action == "stop_and_finalize":
        if status == "running":
            return {"control": "stop_and_finalize"}
        if status in ("queued", "paused"):
            if not has_checkpoint:
                raise InvalidTransition(
                    f"training {row.id} has no checkpoint to finalize from: use stop",
                    current=status,
                )
            # a worker must do the export: the job is queued with the request pending
            return {"status": "queued", "control": "stop_and_finalize"}
    else:
        raise ValueError(f"action: unknown {action!r}; one of {ACTIONS}")
    pending = f" ({control} requested)" if control else ""
    finished = " and finished" if status in FINISHED else ""
    raise InvalidTransition(
        f"cannot {action.replace('_', ' ')} {_what(type(row))} {row.id}: "
        f"it is {status}{finished}{pending}",
        current=status,
    )


def request_control(
    session: Session, model: type[J], ident: int, action: str, *, has_checkpoint: bool = True
) -> ControlOutcome[J]:
    """Apply a user's ``pause | resume | stop | stop_and_finalize``.

    On a running job this records a request the worker honours at its next step
    (checkpoint, then ``paused`` / ``cancelled`` / ``completed``); on a job no worker
    holds, it changes the status directly. Not allowed now → :class:`InvalidTransition`
    (e.g. pausing a completed run). Asking twice is not an error."""
    for _ in range(5):  # retried only when the worker changed the row between read and write
        row = refresh(session, model, ident, _what(model))
        values = _plan(row, action, has_checkpoint)
        if all(getattr(row, k) == v for k, v in values.items()):
            return ControlOutcome(row, False)
        same = [
            model.status == row.status,
            model.control.is_(None) if row.control is None else model.control == row.control,
        ]
        if conditional_update(session, model, ident, same, values):
            enqueue = row.status != "queued" and values.get("status") == "queued"
            return ControlOutcome(refresh(session, model, ident, _what(model)), enqueue)
    raise InvalidTransition(f"{_what(model)} {ident} keeps changing; try again")
