"""The contracts the job layer shares with the store: the Protocols a store implements
(:class:`RunStore`, :class:`ExtractionStore`, :class:`InspectionStore`, :class:`JobStore`),
what an inspection job reads and writes (:class:`InspectionJob`) and the job timing
(:class:`JobTiming`).

The runners (:mod:`saestudio.jobs.runner`), the trainer adapter
(:mod:`saestudio.jobs.adapter`), the Celery tasks (:mod:`saestudio.jobs.tasks`) and the
database implementation (:mod:`saestudio.store.jobstore`) import them from here, so none
of them imports another for its types. Torch-free, Celery-free, database-free.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from saestudio.activations.extract import ExtractConfig
    from saestudio.training.config import TrainConfig

JobKind = Literal["training", "extraction", "inspection"]
"""The kinds of job a worker runs."""


class RunStore(Protocol):
    """What a training job needs from the database (one row of ``trainings``).

    Ids are the rows' integer keys. Methods may be called from several threads (the
    heartbeat runs in its own). Statuses: queued, running, paused, cancelled, completed,
    failed (``saestudio.store.states``).
    """

    def get_control(self, training_id: int) -> str | None:
        """The pending user request: ``pause``, ``stop``, ``stop_and_finalize`` or None."""
        ...

    def set_status(self, training_id: int, status: str, **fields: Any) -> None:
        """Record a status and progress fields: ``step``, ``total_steps``, ``worker``,
        ``error`` (None clears it), ``exports`` ({SAE label: SAELens folder}). Setting
        paused, cancelled, completed or failed clears the pending control request: the
        job has acted on it."""
        ...

    def add_metrics(self, training_id: int, lines: list[dict[str, Any]]) -> None:
        """Store trainer lines (each has ``sae`` and ``step``; one line per (sae, step)
        in a call, the step's training/density/eval lines merged). Upsert: a later call
        may bring more fields for a stored (sae, step), e.g. the final evaluation."""
        ...

    def add_checkpoint(
        self,
        training_id: int,
        sae: str,
        step: int,
        path: str,
        is_best: bool,
        eval_loss: float | None,
    ) -> None:
        """A checkpoint folder was written. Idempotent on (training, sae, step): a resumed
        job records the checkpoint it resumes from again. ``is_best`` moves the best
        mark. The trainer prunes old folders (best + last ``keep_checkpoints``) before
        it reports a new one; the store then drops the rows of folders that are gone."""
        ...

    def delete_metrics_after(self, training_id: int, step: int) -> None:
        """Drop metrics rows with a step above ``step`` (a job restarts from there)."""
        ...

    def heartbeat(self, training_id: int, hostname: str, **progress: Any) -> bool | None:
        """The job is alive on ``hostname``; ``progress``: ``step``, ``total_steps``,
        ``eta_seconds``, ``latest_metrics`` (the card's live numbers between flushes).
        Return False when the job is no longer this worker's (re-queued, deleted): the
        job then stops without writing anything more."""
        ...


class ExtractionStore(Protocol):
    """What an extraction job needs from the database (one row of
    ``activation_datasets``); the same semantics as :class:`RunStore`. Progress fields:
    ``contexts``, ``target_contexts``, ``rows``, ``progress``, ``worker``, ``error``."""

    def get_control(self, dataset_id: int) -> str | None: ...

    def set_status(self, dataset_id: int, status: str, **fields: Any) -> None: ...

    def heartbeat(self, dataset_id: int, hostname: str, **progress: Any) -> bool | None: ...


class InspectionJob(NamedTuple):
    """What one feature inspection reads and writes (absolute paths)."""

    training_id: int
    saes: dict[str, Path]
    """SAE label → its SAELens folder (the run's exports)."""
    activations: Path
    """The activation dataset folder the run trained on."""
    hook: str | None
    """The dataset hook to read when the run names exactly one; else each SAE's own."""
    rows: tuple[int, int]
    """Dataset rows ``[start, end)``."""
    out: Path
    """The inspection folder: ``out/<sae>/latents.jsonl`` and ``summary.json``."""


class InspectionStore(Protocol):
    """What an inspection job needs from the database (one row of ``inspections``); the
    same semantics as :class:`ExtractionStore`. Progress fields: ``rows_done``,
    ``progress``, ``summary``."""

    def get_control(self, inspection_id: int) -> str | None: ...

    def set_status(self, inspection_id: int, status: str, **fields: Any) -> None: ...

    def heartbeat(self, inspection_id: int, hostname: str, **progress: Any) -> bool | None: ...

    def index_latents(
        self, inspection_id: int, sae: str, records: Iterator[tuple[int, dict[str, Any]]]
    ) -> int:
        """Index one SAE's latents: (byte offset in latents.jsonl, record) pairs."""
        ...


class JobStore(Protocol):
    """What the tasks need from the database: the runners' stores, plus loading a job and
    the atomic claims that keep two workers off one job."""

    @property
    def trainings(self) -> RunStore: ...

    @property
    def datasets(self) -> ExtractionStore: ...

    @property
    def inspections(self) -> InspectionStore: ...

    def training_job(self, training_id: int) -> tuple[TrainConfig, Path] | None:
        """The run's config and folder, or None when the training no longer exists."""
        ...

    def dataset_gate(self, training_id: int) -> tuple[str, str | None]:
        """Whether the training's activation dataset (``dataset_id``) lets it start:
        ``("ready", None)`` (none, or completed), ``("wait", None)`` (still queued,
        extracting or paused) or ``("failed", why)`` (failed or cancelled)."""
        ...

    def extraction_job(self, dataset_id: int) -> ExtractConfig | None:
        """The extraction's config (``out`` inside the data dir), or None."""
        ...

    def inspection_job(self, inspection_id: int) -> InspectionJob | None:
        """What an inspection reads and writes, or None when it no longer exists."""
        ...

    def queue_inspection(self, training_id: int, rows: int) -> int | None:
        """Queue an inspection of a completed run over the last ``rows`` rows of its
        activation dataset; its id, or None when the run has none to read (on-the-fly
        runs, plain files without token ids) or ``rows`` is 0."""
        ...

    def claim(self, kind: JobKind, job_id: int, hostname: str, stale_after_s: float) -> bool:
        """Atomically (one conditional UPDATE): if the job is ``queued``, or ``running``
        with a heartbeat older than ``stale_after_s``, mark it ``running`` on
        ``hostname`` with a fresh heartbeat and return True; otherwise False."""
        ...

    def claim_stale(self, stale_after_s: float) -> list[tuple[JobKind, int]]:
        """Atomically move every ``running`` job whose heartbeat is older than
        ``stale_after_s`` back to ``queued``; return them (the caller enqueues them)."""
        ...


class JobTiming(BaseModel):
    """How often a job talks to the store, and when the watchdog calls a job dead.

    Part of the one :class:`~saestudio.settings.Settings` (``settings.job``), read from
    ``SAESTUDIO_JOB_*`` environment variables (``SAESTUDIO_JOB_HEARTBEAT_S=0.3``); the
    default instance is what tests and library callers pass when they want the defaults.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    flush_s: float = Field(
        0.25,
        ge=0,
        description="Write buffered metrics at most this often (with the API's 0.25 s poll, "
        "a line reaches a browser within ~0.5 s of being logged).",
    )
    poll_s: float = Field(0.5, ge=0, description="Read the control request at most this often.")
    heartbeat_s: float = Field(
        1.0,
        gt=0,
        description="Heartbeat period of a running job; it also carries the step, ETA and "
        "latest metrics that job lists show live.",
    )
    stale_after_s: float = Field(
        60.0, gt=0, description="A running job without a heartbeat for this long is dead."
    )
    watchdog_every_s: float = Field(10.0, gt=0, description="How often workers look for them.")


__all__ = ["ExtractionStore", "JobKind", "JobStore", "JobTiming", "RunStore"]
