"""Metric lines of a run.

Rows are unique on (training, SAE, step, kind): the trainer emits a training line, a
density histogram, an evaluation line and a downstream (CE/KL) line that can share a
step. Lines arrive in batches (the job buffers ``on_metrics``) and each batch is one
INSERT … ON CONFLICT statement in the caller's one transaction, never a commit per step
(SPEC §4 erratum 9).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from saestudio.store._common import dialect_insert
from saestudio.store.models import TrainingMetric, utcnow
from saestudio.store.states import METRIC_KINDS, MetricKind

DEFAULT_SAE = "sae"
"""The trainer's label for the only SAE of a single-SAE run."""


def key_kind(key: str) -> MetricKind:
    """Which kind of line a metric key belongs to: the ``feature_density`` histogram,
    downstream (``ce_*``/``kl_*``), evaluation (``eval_*``) or training."""
    if key == "feature_density":
        return "density"
    if key.startswith(("ce_", "kl_")):
        return "downstream"
    if key.startswith("eval_"):
        return "eval"
    return "train"


SHARED_KEYS = ("time",)
"""Keys every kind of line carries (the trainer's wall-clock time of the line)."""


def split_line(line: Mapping[str, Any]) -> dict[MetricKind, dict[str, Any]]:
    """A trainer line as {kind: metrics}. A line merged from several (the job layer may
    merge one step's lines) splits back into its kinds; an explicit ``kind`` key keeps
    the line whole. Kinds without any metric are left out: an empty final evaluation
    must not blank a stored row."""
    body = {k: v for k, v in line.items() if k not in ("step", "sae", "kind")}
    explicit = line.get("kind")
    if explicit is not None:
        if explicit not in METRIC_KINDS:
            raise ValueError(f"kind: unknown {explicit!r}; one of {METRIC_KINDS}")
        return {cast(MetricKind, explicit): body} if body else {}
    parts: dict[MetricKind, dict[str, Any]] = {}
    for key, value in body.items():
        if key not in SHARED_KEYS:
            parts.setdefault(key_kind(key), {})[key] = value
    # the line's wall time belongs to each kind it carries, and makes no kind of its own:
    # a merged eval + density line must not overwrite the step's training row
    for part in parts.values():
        part.update({k: body[k] for k in SHARED_KEYS if k in body})
    return parts


def line_rows(lines: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Trainer lines as the rows they are stored as: {(SAE, step, kind): metrics}, the
    last line for a key winning. The live path turns a worker's published lines into
    WebSocket rows with this too, so they equal what a reader of the table gets."""
    rows: dict[tuple[str, int, str], dict[str, Any]] = {}
    for line in lines:
        step = line.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"metrics line needs a non-negative integer 'step': {line!r:.200}")
        sae = str(line.get("sae") or DEFAULT_SAE)
        for kind, body in split_line(line).items():
            rows[(sae, step, kind)] = body
    return rows


def add_metrics(session: Session, training_id: int, lines: Iterable[Mapping[str, Any]]) -> int:
    """Upsert a batch of trainer lines in one statement (an executemany inside the
    caller's one commit); returns the number of (SAE, step, kind) rows written.

    Idempotent: a line re-logged for a (SAE, step, kind) replaces the stored one (the
    latest execution is the one whose weights survive), so a redelivered job neither
    fails nor duplicates. Within a batch, the last line for a key wins."""
    now = utcnow()
    rows = [
        {
            "training_id": training_id,
            "sae": sae,
            "step": step,
            "kind": kind,
            "metrics": body,
            "created_at": now,
        }
        for (sae, step, kind), body in line_rows(lines).items()
    ]
    if not rows:
        return 0
    stmt = dialect_insert(session)(TrainingMetric.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["training_id", "sae", "step", "kind"],
        set_={"metrics": stmt.excluded.metrics, "created_at": stmt.excluded.created_at},
    )
    session.execute(stmt, rows)
    return len(rows)


def metrics(
    session: Session,
    training_id: int,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = 10_000,
    sae: str | None = None,
    kind: str | Collection[str] | None = None,
) -> list[TrainingMetric]:
    """Lines with ``start_step <= step <= end_step`` (either bound optional), in step
    order then SAE and kind; at most ``limit`` (None = all). A reconnecting client
    passes ``start_step = last seen + 1``. ``TrainingMetric.line`` gives the dict back."""
    stmt = select(TrainingMetric).where(TrainingMetric.training_id == training_id)
    if start_step is not None:
        stmt = stmt.where(TrainingMetric.step >= start_step)
    if end_step is not None:
        stmt = stmt.where(TrainingMetric.step <= end_step)
    if sae is not None:
        stmt = stmt.where(TrainingMetric.sae == sae)
    if isinstance(kind, str):
        stmt = stmt.where(TrainingMetric.kind == kind)
    elif kind is not None:
        stmt = stmt.where(TrainingMetric.kind.in_(list(kind)))
    stmt = stmt.order_by(TrainingMetric.step, TrainingMetric.sae, TrainingMetric.kind)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def last_step(session: Session, training_id: int) -> int | None:
    """The highest step with a stored line, or None: where a live reader starts."""
    stmt = select(func.max(TrainingMetric.step)).where(TrainingMetric.training_id == training_id)
    return session.scalar(stmt)


def delete_metrics_after(
    session: Session, training_id: int, step: int, sae: str | None = None
) -> int:
    """Drop lines logged after ``step`` (all SAEs unless ``sae``): a run resumed from
    the checkpoint at ``step`` re-logs what came after, as one uninterrupted run."""
    stmt = delete(TrainingMetric).where(
        TrainingMetric.training_id == training_id, TrainingMetric.step > step
    )
    if sae is not None:
        stmt = stmt.where(TrainingMetric.sae == sae)
    result = session.execute(stmt)
    return cast(CursorResult[Any], result).rowcount
