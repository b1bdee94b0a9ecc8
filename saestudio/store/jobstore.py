"""The database behind the job layer: :class:`SqlJobStore` implements the protocols of
:mod:`saestudio.jobs.contracts` (``JobStore``, ``RunStore``, ``ExtractionStore``,
``InspectionStore``) on the repository functions. Structural typing: nothing here imports
the jobs layer (imports point down).

Each call is one short transaction of its own, so the heartbeat thread and the training
thread of a job never share a session. Paths cross this boundary absolute (what the
trainer writes) and are stored relative to the data dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.orm import Session

from saestudio.store import checkpoints as ckpts
from saestudio.store import datasets, inspections, lifecycle, metrics, trainings
from saestudio.store.db import session_scope
from saestudio.store.models import ActivationDataset, Inspection, Training

if TYPE_CHECKING:
    from saestudio.activations.extract import ExtractConfig
    from saestudio.jobs.inspect_job import InspectionJob
    from saestudio.training.config import TrainConfig

JobKind = Literal["training", "extraction", "inspection"]


class _Base:
    def __init__(self, url: str, data_dir: Path):
        self.url, self.data_dir = url, Path(data_dir).resolve()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.url) as s:
            yield s

    def rel(self, path: str | Path) -> str:
        """``path`` relative to the data dir (ValueError when it is outside)."""
        p = Path(path)
        p = p if p.is_absolute() else self.data_dir / p
        try:
            return p.resolve().relative_to(self.data_dir).as_posix()
        except ValueError:
            raise ValueError(f"{path} is outside the data dir {self.data_dir}") from None


class SqlRunStore(_Base):
    """``RunStore``: one training's reports."""

    def get_control(self, training_id: int) -> str | None:
        with self.session() as s:
            return trainings.get_training(s, int(training_id)).control

    def set_status(self, training_id: int, status: str, **fields: Any) -> None:
        worker = fields.pop("worker", None) or fields.pop("hostname", None)
        error = fields.pop("error", None)
        if "exports" not in fields and fields.get("sae_paths"):
            fields["exports"] = fields["sae_paths"]
        if fields.get("exports"):
            fields["exports"] = {k: self.rel(v) for k, v in fields["exports"].items()}
        known = {k: v for k, v in fields.items() if k in trainings.PROGRESS}
        with self.session() as s:
            trainings.set_status(s, int(training_id), status, error=error, worker=worker, **known)

    def add_metrics(self, training_id: int, lines: list[dict[str, Any]]) -> None:
        with self.session() as s:
            metrics.add_metrics(s, int(training_id), lines)

    def add_checkpoint(
        self,
        training_id: int,
        sae: str,
        step: int,
        path: str,
        is_best: bool,
        eval_loss: float | None,
    ) -> None:
        from saestudio.training.checkpoint import checkpoints  # torch: worker side only

        folder = Path(path)
        complete = {self.rel(d) for d in checkpoints(folder.parent).values()}
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        with self.session() as s:
            ckpts.add_checkpoint(
                s,
                int(training_id),
                sae=sae,
                step=step,
                path=self.rel(folder),
                is_best=is_best,
                eval_loss=eval_loss,
                size_bytes=size if folder.is_dir() else None,
            )
            # the trainer pruned older folders (best + last keep_checkpoints) just before
            ckpts.forget_checkpoints(s, int(training_id), sae, lambda rel: rel in complete)

    def delete_metrics_after(self, training_id: int, step: int) -> None:
        with self.session() as s:
            metrics.delete_metrics_after(s, int(training_id), step)
            # the checkpoints a restarted job will write again, or never reach
            ckpts.delete_checkpoints_after(s, int(training_id), step)

    def heartbeat(self, training_id: int, hostname: str, **progress: Any) -> bool:
        known = {k: v for k, v in progress.items() if k in trainings.BEAT}
        with self.session() as s:
            return trainings.heartbeat(s, int(training_id), hostname, **known).owned


class SqlExtractionStore(_Base):
    """``ExtractionStore``: one extraction's reports."""

    def get_control(self, dataset_id: int) -> str | None:
        with self.session() as s:
            return datasets.get_dataset(s, int(dataset_id)).control

    def set_status(self, dataset_id: int, status: str, **fields: Any) -> None:
        worker = fields.pop("worker", None) or fields.pop("hostname", None)
        error = fields.pop("error", None)
        known = {k: v for k, v in fields.items() if k in datasets.PROGRESS}
        with self.session() as s:
            datasets.set_dataset_status(
                s, int(dataset_id), status, error=error, worker=worker, **known
            )

    def heartbeat(self, dataset_id: int, hostname: str, **progress: Any) -> bool:
        known = {k: v for k, v in progress.items() if k in datasets.PROGRESS}
        with self.session() as s:
            return datasets.dataset_heartbeat(s, int(dataset_id), hostname, **known).owned


class SqlInspectionStore(_Base):
    """``InspectionStore``: one inspection's reports and its latents' index."""

    def get_control(self, inspection_id: int) -> str | None:
        with self.session() as s:
            return inspections.get_inspection(s, int(inspection_id)).control

    def set_status(self, inspection_id: int, status: str, **fields: Any) -> None:
        worker = fields.pop("worker", None) or fields.pop("hostname", None)
        error = fields.pop("error", None)
        known = {k: v for k, v in fields.items() if k in inspections.PROGRESS}
        with self.session() as s:
            inspections.set_inspection_status(
                s, int(inspection_id), status, error=error, worker=worker, **known
            )

    def heartbeat(self, inspection_id: int, hostname: str, **progress: Any) -> bool:
        known = {k: v for k, v in progress.items() if k in inspections.PROGRESS}
        with self.session() as s:
            return inspections.inspection_heartbeat(s, int(inspection_id), hostname, **known).owned

    def index_latents(self, inspection_id: int, sae: str, records: Any) -> int:
        with self.session() as s:
            return inspections.index_latents(s, int(inspection_id), sae, records)


class SqlJobStore(_Base):
    """``JobStore``: loading, claiming and recovering jobs, plus the runners' stores."""

    def __init__(self, url: str, data_dir: Path):
        super().__init__(url, data_dir)
        self._trainings = SqlRunStore(url, data_dir)
        self._datasets = SqlExtractionStore(url, data_dir)
        self._inspections = SqlInspectionStore(url, data_dir)

    @property
    def trainings(self) -> SqlRunStore:
        return self._trainings

    @property
    def datasets(self) -> SqlExtractionStore:
        return self._datasets

    @property
    def inspections(self) -> SqlInspectionStore:
        return self._inspections

    def training_job(self, training_id: int) -> tuple[TrainConfig, Path] | None:
        from saestudio.training.config import TrainConfig

        with self.session() as s:
            row = s.get(Training, int(training_id))
            if row is None:
                return None
            run_dir = self.data_dir / row.out_dir
            # the folder is stored once, as out_dir; the config carries none of its own
            return TrainConfig.model_validate({**row.config, "out": str(run_dir)}), run_dir

    def dataset_gate(self, training_id: int) -> tuple[str, str | None]:
        with self.session() as s:
            row = s.get(Training, int(training_id))
            ds = s.get(ActivationDataset, row.dataset_id) if row and row.dataset_id else None
            if ds is None or ds.status == "completed":
                return "ready", None
            if ds.status in ("failed", "cancelled"):
                why = f": {ds.error}" if ds.error else ""
                return "failed", f"activation dataset '{ds.name}' is {ds.status}{why}"
            return "wait", None

    def extraction_job(self, dataset_id: int) -> ExtractConfig | None:
        from saestudio.activations.extract import ExtractConfig

        with self.session() as s:
            row = s.get(ActivationDataset, int(dataset_id))
            if row is None:
                return None
            out = str(self.data_dir / row.path)
            return ExtractConfig.model_validate({**row.config, "out": out})

    def inspection_job(self, inspection_id: int) -> InspectionJob | None:
        from saestudio.jobs.inspect_job import InspectionJob

        with self.session() as s:
            row = s.get(Inspection, int(inspection_id))
            run = s.get(Training, row.training_id) if row else None
            if row is None or run is None:
                return None
            hooks = list(run.config.get("hook") or [])
            return InspectionJob(
                training_id=run.id,
                saes={k: self.data_dir / v for k, v in (run.exports or {}).items()},
                activations=self.data_dir / str(run.config.get("activations") or ""),
                hook=hooks[0] if len(hooks) == 1 else None,
                rows=(int(row.row_start), int(row.row_end)),
                out=self.data_dir / row.path,
            )

    def queue_inspection(self, training_id: int, rows: int) -> int | None:
        with self.session() as s:
            run = trainings.get_training(s, int(training_id))
            span = inspection_rows(self.data_dir, run, rows)
            if span is None:
                return None
            row = inspections.create_inspection(
                s, run.id, path=f"{run.out_dir}/inspection", row_start=span[0], row_end=span[1]
            )
            return row.id

    def claim(self, kind: JobKind, job_id: int, hostname: str, stale_after_s: float) -> bool:
        take: Any = {
            "training": trainings.claim,
            "extraction": datasets.claim_dataset,
            "inspection": inspections.claim_inspection,
        }[kind]
        with self.session() as s:
            return take(s, int(job_id), hostname, stale_after_s=stale_after_s) is not None

    def claim_stale(self, stale_after_s: float) -> list[tuple[JobKind, int]]:
        with self.session() as s:
            runs = trainings.requeue_stale(s, stale_after_s)
            extractions = datasets.requeue_stale_extractions(s, stale_after_s)
            inspected = inspections.requeue_stale_inspections(s, stale_after_s)
        found: list[tuple[JobKind, int]] = [("training", r.id) for r in runs]
        found += [("extraction", d.id) for d in extractions]
        return found + [("inspection", i.id) for i in inspected]

    def requeue_worker(self, hostname: str) -> list[tuple[JobKind, int]]:
        """Move every ``running`` job of the (known dead) worker ``hostname`` back to
        ``queued`` now; return them (the caller enqueues them)."""
        with self.session() as s:
            runs = lifecycle.requeue_worker(s, Training, hostname)
            extractions = lifecycle.requeue_worker(s, ActivationDataset, hostname)
            inspected = lifecycle.requeue_worker(s, Inspection, hostname)
        found: list[tuple[JobKind, int]] = [("training", r.id) for r in runs]
        found += [("extraction", d.id) for d in extractions]
        return found + [("inspection", i.id) for i in inspected]


def inspection_rows(data_dir: Path, run: Training, rows: int) -> tuple[int, int] | None:
    """The last ``rows`` rows of the run's activation dataset (its held-out end), or
    None when there is nothing to inspect: ``rows`` 0, no export yet, an on-the-fly run,
    or data that is not an activation dataset with token ids (a plain array file)."""
    from saestudio.activations.manifest import open_activation_dataset

    source = run.config.get("activations")
    if rows <= 0 or not source or not run.exports:
        return None
    try:
        total = open_activation_dataset(data_dir / str(source)).rows
    except (OSError, ValueError):
        return None
    return (max(0, total - rows), total) if total > 0 else None


def default_job_store() -> SqlJobStore:
    """The store on ``Settings.db_url`` and ``Settings.data_dir``."""
    from saestudio.settings import get_settings

    settings = get_settings()
    return SqlJobStore(settings.db_url, settings.data_dir)
