"""The studio's tables, as SQLAlchemy 2 typed models.

``versions/0001_initial.py`` and the revisions after it create exactly these; a test asserts that Alembic's
autogenerate finds no difference. Paths are stored relative to ``Settings.data_dir`` so
a data dir can move (or be mounted elsewhere on another worker) without rewriting rows.
All timestamps are timezone-aware UTC on both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from saestudio.store.states import CONTROLS, METRIC_KINDS, STATUSES

# Deterministic constraint names: migrations can drop/alter them by name on any backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL: stored parsed (smaller, indexable, `||` merges); plain JSON text on
# SQLite. Every value goes through db.json_dumps (NaN → null) on both.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; metrics ids want 64 bits on PG.
BigId = BigInteger().with_variant(Integer(), "sqlite")
MAX_ID = 2**31 - 1
"""Largest key of the 32-bit ``Integer`` id columns (trainings, activation datasets,
templates): the API refuses larger ids with 422 instead of passing them to the database
(where SQLite and PostgreSQL would raise)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out. SQLite keeps no zone and hands back naive values;
    they are UTC because everything written goes through here."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class JobColumns:
    """What a row run by a worker has: status, the user's pending request, ownership."""

    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    control: Mapped[str | None] = mapped_column(
        String(24), doc="Requested and not yet honoured: pause | stop | stop_and_finalize."
    )
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255), doc="Celery worker name.")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, doc="Times a worker claimed it.")
    celery_task_id: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


def _job_checks() -> tuple[CheckConstraint, CheckConstraint]:
    return (
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint(f"control IS NULL OR {_in('control', CONTROLS)}", name="control"),
    )


class ActivationDataset(JobColumns, Timestamps, Base):
    """An extraction job and the activation dataset folder it writes."""

    __tablename__ = "activation_datasets"
    __table_args__ = _job_checks()

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    path: Mapped[str] = mapped_column(String(1000), doc="Folder, relative to data_dir.")
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, doc="ExtractConfig dump.")
    manifest: Mapped[dict[str, Any] | None] = mapped_column(
        JSONType, doc="Summary of the written manifest: hooks, d_in, rows, stats."
    )
    # the extraction's own progress units (ExtractConfig.target_contexts)
    contexts: Mapped[int] = mapped_column(BigInteger, default=0)
    target_contexts: Mapped[int | None] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger, default=0, doc="Activation rows stored.")
    progress: Mapped[float] = mapped_column(Float, default=0.0, doc="0..1")


class Training(JobColumns, Timestamps, Base):
    """One training job (one or several SAEs fed from one activation stream)."""

    __tablename__ = "trainings"
    __table_args__ = _job_checks()

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, doc="TrainConfig dump.")
    # denormalised from config so a list of cards needs no JSON parsing
    architecture: Mapped[str] = mapped_column(String(32))
    d_sae: Mapped[int | None] = mapped_column(Integer, doc="Known once d_in is read.")
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[float] = mapped_column(Float, default=0.0, doc="step / total_steps")
    latest_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    out_dir: Mapped[str] = mapped_column(String(1000), doc="Relative to data_dir.")
    exports: Mapped[dict[str, str] | None] = mapped_column(
        JSONType, doc="SAE label → SAELens export folder (relative), once exported."
    )
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("activation_datasets.id", ondelete="SET NULL"), index=True
    )
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("trainings.id", ondelete="SET NULL"),
        doc="The run this one retries or branches from (a checkpoint of it).",
    )

    # passive_deletes: the database's ON DELETE CASCADE removes children; the ORM must
    # not load thousands of metric rows just to delete them one by one
    metrics: Mapped[list[TrainingMetric]] = relationship(
        back_populates="training", passive_deletes=True, lazy="raise_on_sql"
    )
    checkpoints: Mapped[list[Checkpoint]] = relationship(
        back_populates="training", passive_deletes=True, lazy="raise_on_sql"
    )


class TrainingMetric(Base):
    """The metrics of one kind of line, of one SAE, at one step.

    Unique on (training, SAE, step, kind) rather than (training, SAE, step): a step can
    carry a training line, a density histogram, an evaluation line and a downstream
    (CE/KL) line. One row per kind keeps every line as logged, makes a re-logged line a
    plain upsert on one key (no JSON merging, which differs between SQLite's json_patch
    and PostgreSQL's ``||``, and would let a stale line half-overwrite a fresh one), and
    lets charts skip the bulky density rows.
    """

    __tablename__ = "training_metrics"
    __table_args__ = (
        UniqueConstraint("training_id", "sae", "step", "kind"),
        CheckConstraint(_in("kind", METRIC_KINDS), name="kind"),
        # range reads across all SAEs of a run (the unique index leads with sae)
        Index("ix_training_metrics_training_id_step", "training_id", "step"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    training_id: Mapped[int] = mapped_column(ForeignKey("trainings.id", ondelete="CASCADE"))
    sae: Mapped[str] = mapped_column(String(200), doc="The SAE's label within the run.")
    step: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, doc="The line minus step, sae.")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    training: Mapped[Training] = relationship(back_populates="metrics", lazy="raise_on_sql")

    @property
    def line(self) -> dict[str, Any]:
        """The line as the trainer emitted it (``step`` and ``sae`` put back)."""
        return {"step": self.step, "sae": self.sae, **self.metrics}


class Checkpoint(Base):
    """A checkpoint folder of one SAE of a run."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("training_id", "sae", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    training_id: Mapped[int] = mapped_column(
        ForeignKey("trainings.id", ondelete="CASCADE"), index=True
    )
    sae: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1000), doc="Relative to data_dir.")
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)
    eval_loss: Mapped[float | None] = mapped_column(Float, doc="Held-out loss (ranks best).")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    training: Mapped[Training] = relationship(back_populates="checkpoints", lazy="raise_on_sql")


class TrainingTemplate(Timestamps, Base):
    """A saved (possibly partial) TrainConfig the form can load."""

    __tablename__ = "training_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    favourite: Mapped[bool] = mapped_column(Boolean, default=False)


class Inspection(JobColumns, Timestamps, Base):
    """One feature inspection job: every SAE of a run, one pass over a row range of its
    activation dataset. Results are files (``path/<sae>/latents.jsonl``); the latents'
    scalar fields are indexed in :class:`InspectionLatent` for sorting and search."""

    __tablename__ = "inspections"
    __table_args__ = _job_checks()

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    training_id: Mapped[int] = mapped_column(
        ForeignKey("trainings.id", ondelete="CASCADE"), unique=True
    )
    path: Mapped[str] = mapped_column(String(1000), doc="Output folder, relative to data_dir.")
    row_start: Mapped[int] = mapped_column(BigInteger, doc="First dataset row read.")
    row_end: Mapped[int] = mapped_column(BigInteger, doc="One past the last row read.")
    rows_done: Mapped[int] = mapped_column(BigInteger, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0, doc="0..1")
    summary: Mapped[dict[str, Any] | None] = mapped_column(
        JSONType, doc="SAE label → its summary.json, once completed."
    )


class InspectionLatent(Base):
    """One latent of one inspected SAE: what the latents table sorts and searches on, and
    where its full record starts in ``latents.jsonl`` (``offset``, in bytes)."""

    __tablename__ = "inspection_latents"
    __table_args__ = (UniqueConstraint("inspection_id", "sae", "latent"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    sae: Mapped[str] = mapped_column(String(200))
    latent: Mapped[int] = mapped_column(Integer)
    density: Mapped[float] = mapped_column(Float)
    mean_activation: Mapped[float] = mapped_column(Float)
    max_activation: Mapped[float] = mapped_column(Float)
    top_tokens: Mapped[list[str]] = mapped_column(
        JSONType, doc="Distinct tokens of the top examples, most activating first."
    )
    search_text: Mapped[str] = mapped_column(
        Text, doc="The top tokens lower-cased and joined by newlines (token search)."
    )
    offset: Mapped[int] = mapped_column(BigInteger, doc="Byte offset of its latents.jsonl line.")


class LatentLabel(Base):
    """A researcher's name and note for one latent of one SAE of a run. Keyed by the run,
    not the inspection, so a label survives a re-inspection."""

    __tablename__ = "latent_labels"
    __table_args__ = (UniqueConstraint("training_id", "sae", "latent"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    training_id: Mapped[int] = mapped_column(ForeignKey("trainings.id", ondelete="CASCADE"))
    sae: Mapped[str] = mapped_column(String(200))
    latent: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


TABLES = tuple(Base.metadata.tables)
"""Every table the migrations create (checked by the migration test)."""
