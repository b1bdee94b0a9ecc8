"""Feature inspections: the job that inspects every SAE of a finished run, and the index
of its latents (what the latents table sorts, filters and searches on).

One inspection per run (unique ``training_id``): inspecting again replaces it, and its
indexed latents go with it; labels live apart (:mod:`saestudio.store.labels`) and stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from saestudio.store import lifecycle
from saestudio.store._common import check_changes, relative_path
from saestudio.store.lifecycle import Heartbeat
from saestudio.store.models import Inspection, InspectionLatent
from saestudio.store.states import InvalidTransition, NotFound

WHAT = "inspection"
PROGRESS = ("rows_done", "progress", "summary")
TOP_TOKENS = 8
"""Distinct top-example tokens kept per latent in the index (the table shows them)."""


def create_inspection(
    session: Session, training_id: int, *, path: str, row_start: int, row_end: int
) -> Inspection:
    """A queued inspection of the run over dataset rows ``[row_start, row_end)``, writing
    into ``path`` (relative to the data dir). Replaces a finished earlier one (its index
    rows go with it); one still queued or running → :class:`InvalidTransition`."""
    if row_start < 0 or row_end <= row_start:
        raise ValueError(f"rows: empty or negative range [{row_start}, {row_end})")
    old = session.scalar(select(Inspection).where(Inspection.training_id == training_id))
    if old is not None:
        if old.status in ("queued", "running"):
            raise InvalidTransition(
                f"training {training_id} is already being inspected ({old.status}): stop it first",
                current=old.status,
            )
        session.execute(delete(Inspection).where(Inspection.id == old.id))
        session.expunge(old)
    row = Inspection(
        training_id=training_id,
        path=relative_path(path),
        row_start=row_start,
        row_end=row_end,
        status="queued",
    )
    session.add(row)
    session.flush()
    return row


def get_inspection(session: Session, inspection_id: int) -> Inspection:
    row = session.get(Inspection, inspection_id)
    if row is None:
        raise NotFound(WHAT, inspection_id)
    return row


def inspection_of(session: Session, training_id: int) -> Inspection | None:
    """The run's inspection, or None when it has none."""
    return session.scalar(select(Inspection).where(Inspection.training_id == training_id))


def set_inspection_status(
    session: Session,
    inspection_id: int,
    new: str,
    *,
    error: str | None = None,
    worker: str | None = None,
    **fields: Any,
) -> Inspection:
    """Move an inspection to ``new`` with progress ``fields`` (``rows_done``, ``progress``,
    ``summary``) in one UPDATE; else :class:`InvalidTransition`."""
    check_changes(fields, PROGRESS, WHAT)
    if new == "completed":
        fields.setdefault("progress", 1.0)
    return lifecycle.set_status(
        session, Inspection, inspection_id, new, error=error, worker=worker, fields=fields
    )


def claim_inspection(
    session: Session, inspection_id: int, worker: str, *, stale_after_s: float | None = None
) -> Inspection | None:
    """Atomically take a queued inspection; None when it is not claimable."""
    return lifecycle.claim(session, Inspection, inspection_id, worker, stale_after_s=stale_after_s)


def inspection_heartbeat(
    session: Session, inspection_id: int, worker: str, **progress: Any
) -> Heartbeat:
    check_changes(progress, PROGRESS, WHAT)
    return lifecycle.beat(session, Inspection, inspection_id, worker, progress)


def requeue_stale_inspections(session: Session, older_than_seconds: float) -> list[Inspection]:
    """Crash recovery: an inspection whose worker died starts its pass again."""
    return lifecycle.requeue_stale(session, Inspection, older_than_seconds)


def request_inspection_control(
    session: Session, inspection_id: int, action: str
) -> lifecycle.ControlOutcome[Inspection]:
    """``stop`` or ``resume`` (a stopped or failed inspection runs its pass again)."""
    if action not in ("stop", "resume"):
        raise InvalidTransition(f"an inspection can be stopped or resumed, not {action!r}")
    return lifecycle.request_control(session, Inspection, inspection_id, action)


def _top_tokens(record: Mapping[str, Any]) -> list[str]:
    seen: list[str] = []
    for example in record.get("top") or []:
        token = str(example.get("token", ""))
        if token not in seen:
            seen.append(token)
        if len(seen) == TOP_TOKENS:
            break
    return seen


def index_latents(
    session: Session, inspection_id: int, sae: str, records: Iterable[tuple[int, dict[str, Any]]]
) -> int:
    """Index one SAE's latents: ``records`` are (byte offset in latents.jsonl, record).
    Replaces what was indexed for this SAE before; returns the number of latents."""
    session.execute(
        delete(InspectionLatent).where(
            InspectionLatent.inspection_id == inspection_id, InspectionLatent.sae == sae
        )
    )
    batch: list[dict[str, Any]] = []
    n = 0

    def flush() -> None:
        if batch:
            session.execute(insert(InspectionLatent), batch)
            batch.clear()

    for offset, rec in records:
        tokens = _top_tokens(rec)
        batch.append(
            {
                "inspection_id": inspection_id,
                "sae": sae,
                "latent": int(rec["latent"]),
                "density": float(rec.get("density") or 0.0),
                "mean_activation": float(rec.get("mean_activation") or 0.0),
                "max_activation": float(rec.get("max_activation") or 0.0),
                "top_tokens": tokens,
                "search_text": "\n".join(t.strip().lower() for t in tokens),
                "offset": int(offset),
            }
        )
        n += 1
        if len(batch) >= 2000:
            flush()
    flush()
    return n
