"""Jobs without Celery and without a database: train or extract, reporting to a store.

:func:`run_training` and :func:`run_extraction` are what the Celery tasks call; they know
the store only through the :class:`~saestudio.jobs.contracts.RunStore` /
:class:`~saestudio.jobs.contracts.ExtractionStore` protocols (the DB layer implements
them), so they run and are tested alone.

Guarantees a store can rely on:

- metrics arrive in batches (at most one ``add_metrics`` every ``flush_s``, plus one at
  each checkpoint and at the end — erratum 9);
- every metrics line at or before a checkpoint's step is stored *before* that checkpoint
  is written, and a (re)started job first calls ``delete_metrics_after(its start step)``,
  so a resumed or redelivered job neither loses nor duplicates lines;
- a job calls ``heartbeat`` every ``heartbeat_s`` from a background thread while it runs
  (the watchdog in :mod:`saestudio.jobs.tasks` re-queues jobs whose heartbeat stops).

Every status change, metrics batch, checkpoint and training heartbeat is also published
to the job's event channel (:mod:`saestudio.jobs.events`), after the store has it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from pathlib import Path
from typing import Any

from saestudio.activations.extract import ExtractConfig, extract
from saestudio.activations.manifest import Manifest
from saestudio.jobs.adapter import ControlPoller, Heartbeat, JobLost, StoreCallback, one_line
from saestudio.jobs.contracts import ExtractionStore, JobTiming, RunStore
from saestudio.jobs.events import GLOBAL_CHANNEL, EventSink, dataset_channel, training_channel
from saestudio.training import checkpoint as ckpt
from saestudio.training.config import TrainConfig
from saestudio.training.export import export_checkpoint
from saestudio.training.trainer import Trainer, TrainResult

log = logging.getLogger(__name__)

__all__ = ["resume_step", "run_extraction", "run_training"]


class _Reporter:
    """Status changes to the store, then to the job's and the global event channel
    (``extra``: details for the event only)."""

    def __init__(self, job_id: int, set_status: Any, events: EventSink, channel: str, kind: str):
        self.job_id, self._set, self.events, self.channel = job_id, set_status, events, channel
        self.key = f"{kind}_id"

    def __call__(self, status: str, extra: dict[str, Any] | None = None, **fields: Any) -> None:
        self._set(self.job_id, status, **fields)
        event = {
            "type": "status",
            self.key: self.job_id,
            "status": status,
            **fields,
            **(extra or {}),
        }
        self.events.publish(self.channel, event)
        self.events.publish(GLOBAL_CHANNEL, event)


def resume_step(cfg: TrainConfig, *, clean: bool = False) -> int | None:
    """The latest checkpoint step every SAE of the job reached, or None (start fresh).
    ``clean``: also remove leftovers of a killed write (``.tmp``, folders without
    ``state.json``) — only for the job's owner, which is not writing one now."""
    roots = [Path(job.out) / "checkpoints" for _, job in cfg.sae_jobs()]
    return ckpt.latest_common_step(roots, clean=clean)


def _record_resumed_checkpoints(
    training_id: int, cfg: TrainConfig, step: int, store: RunStore
) -> None:
    """Record the checkpoint we resume from again: a kill between writing a checkpoint
    and recording it would otherwise leave it out of the database."""
    for label, job in cfg.sae_jobs():
        root = Path(job.out) / "checkpoints"
        path = ckpt.step_dir(root, step)
        state = json.loads((path / ckpt.STATE_FILE).read_text())
        best = ckpt.read_best(root)
        is_best = best is not None and best["step"] == step
        store.add_checkpoint(training_id, label, step, str(path), is_best, state.get("eval_loss"))


def run_training(
    training_id: int,
    cfg: TrainConfig,
    run_dir: Path,
    store: RunStore,
    events: EventSink,
    *,
    hostname: str | None = None,
    timing: JobTiming | None = None,
    interrupt: threading.Event | None = None,
) -> str:
    """Train (or resume, when ``run_dir`` holds checkpoints) and report to ``store``.

    Returns the status recorded: completed, paused, cancelled or failed — or
    ``interrupted`` when ``interrupt`` was set (the worker is shutting down): the run
    checkpointed, its status is back to ``queued`` and the caller should re-enqueue it;
    or ``lost`` (nothing recorded) when the store gave the job to another worker.
    ``cfg.out`` is replaced by ``run_dir`` (the service decides where runs live).
    ``cfg.num_devices`` > 1 trains with that many torchrun processes on this worker
    (:mod:`saestudio.jobs.torchrun_job`); fewer devices here fail the run with a message
    naming ``num_devices``.
    """
    timing = timing or JobTiming()
    hostname = hostname or socket.gethostname()
    channel = training_channel(training_id)
    report = _Reporter(training_id, store.set_status, events, channel, "training")
    if Path(cfg.out) != Path(run_dir):
        cfg = cfg.model_copy(update={"out": str(run_dir)})
    progress: dict[str, Any] = {"total_steps": cfg.total_steps}

    def beat() -> bool | None:
        alive = store.heartbeat(training_id, hostname, **(cb.progress if cb else progress))
        if cb is not None and alive is not False:  # new step, ETA, metrics: readers re-read
            events.publish(channel, {"type": "progress", "training_id": training_id})
        return alive

    cb: StoreCallback | None = None
    heart = Heartbeat(beat, timing.heartbeat_s, timing.stale_after_s)
    try:
        with heart:
            heart.check()  # claimed by another worker meanwhile: write nothing
            start = resume_step(cfg, clean=True)
            store.delete_metrics_after(training_id, start or 0)
            if start is None:  # a dead job's partial checkpoints must not rank as best
                for _, job in cfg.sae_jobs():
                    if (Path(job.out) / "checkpoints").is_dir():
                        ckpt.drop_after(Path(job.out) / "checkpoints", 0)
            else:
                _record_resumed_checkpoints(training_id, cfg, start, store)
            report("running", step=start or 0, worker=hostname, error=None, **progress)
            cb = StoreCallback(training_id, store, events, channel, timing, cfg, interrupt, heart)
            resume: Path | None = None
            if start is not None:  # one SAE: exactly that folder; several: the trainer picks
                one = len(cfg.sae_jobs()) == 1
                resume = ckpt.step_dir(Path(run_dir) / "checkpoints", start) if one else run_dir
            if cfg.num_devices > 1:  # a torchrun job on this worker, rank 0 reporting to cb
                from saestudio.jobs.torchrun_job import run_torchrun

                result = run_torchrun(cfg, [cb], resume)
            else:
                result = Trainer(cfg, [cb], resume=resume).fit()
            heart.check()  # lost while finishing: the new owner reports, not us
            cb.flush(strict=True)  # a completed run has all its lines stored
            return _finish(cfg, result, cb, report)
    except JobLost as e:
        log.warning("training %s: %s; stopped without reporting", training_id, e)
        return "lost"
    except Exception as e:  # the run fails; its checkpoints stay for a resume
        log.exception("training %s failed", training_id)
        try:
            if cb is not None:
                cb.flush()
            report("failed", error=one_line(e), step=cb.step if cb else None)
        except Exception:
            log.exception("training %s: could not record the failure", training_id)
        return "failed"


def _finish(cfg: TrainConfig, result: TrainResult, cb: StoreCallback, report: _Reporter) -> str:
    """Map the trainer's outcome and the user's request onto the run's status."""
    step = result.step
    last = {"checkpoint": str(result.checkpoint) if result.checkpoint else None}
    if result.status == "completed":
        saes = {k: str(v) for k, v in result.saes.items() if v is not None}
        report("completed", {"sae_path": str(result.sae_path)}, step=step, exports=saes)
        return "completed"
    if result.status == "paused":
        if cb.acted_on == "interrupt":
            report("queued", {**last, "note": "worker shut down; will resume"}, step=step)
            return "interrupted"
        report("paused", last, step=step)
        return "paused"
    if cb.acted_on == "stop_and_finalize":  # export what the last checkpoint holds
        saes = {
            label: str(export_checkpoint(Path(job.out), Path(job.out)))
            for label, job in cfg.sae_jobs()
        }
        extra = {"sae_path": next(iter(saes.values())), "finalized": True}
        report("completed", extra, step=step, exports=saes)
        return "completed"
    report("cancelled", last, step=step)
    return "cancelled"


def run_extraction(
    dataset_id: int,
    cfg: ExtractConfig,
    store: ExtractionStore,
    events: EventSink,
    *,
    hostname: str | None = None,
    timing: JobTiming | None = None,
    interrupt: threading.Event | None = None,
) -> str:
    """Extract (continuing what ``cfg.out`` already holds) and report to ``store``.

    Progress is a ``running`` status per stored shard (contexts, rows, progress).
    Returns completed, paused, cancelled (stored shards kept: re-running continues),
    failed, or ``interrupted`` (as for :func:`run_training`).
    """
    timing = timing or JobTiming()
    hostname = hostname or socket.gethostname()
    report = _Reporter(dataset_id, store.set_status, events, dataset_channel(dataset_id), "dataset")
    control = ControlPoller(lambda: store.get_control(dataset_id), timing.poll_s)

    progress: dict[str, Any] = {}

    def should_stop() -> bool:
        stop = control.get() is not None or bool(interrupt and interrupt.is_set())
        return stop or heart.lost

    def on_shard(m: Manifest) -> None:
        progress.update(_progress(m))
        report("running", **progress)

    heart = Heartbeat(
        lambda: store.heartbeat(dataset_id, hostname, **progress),
        timing.heartbeat_s,
        timing.stale_after_s,
    )
    try:
        with heart:
            report("running", worker=hostname, error=None)
            manifest = extract(cfg, progress=False, should_stop=should_stop, on_shard=on_shard)
            heart.check()
    except JobLost as e:
        log.warning("extraction %s: %s; stopped without reporting", dataset_id, e)
        return "lost"
    except Exception as e:
        log.exception("extraction %s failed", dataset_id)
        try:
            report("failed", error=one_line(e))
        except Exception:
            log.exception("extraction %s: could not record the failure", dataset_id)
        return "failed"
    fields = _progress(manifest)
    if manifest.complete:
        report("completed", manifest=_summary(manifest), **fields)
        return "completed"
    if control.value is None and interrupt is not None and interrupt.is_set():
        report("queued", {"note": "worker shut down; will resume"}, **fields)
        return "interrupted"
    status = "paused" if control.value == "pause" else "cancelled"
    report(status, **fields)
    return status


def _summary(m: Manifest) -> dict[str, Any]:
    """What the studio shows of a finished dataset: the manifest without its shard list."""
    return m.model_dump(mode="json", exclude={"shards", "sums", "special_token_ids"})


def _progress(m: Manifest) -> dict[str, Any]:
    return {
        "contexts": m.contexts,
        "target_contexts": m.target_contexts,
        "rows": m.rows,
        "progress": round(m.contexts / max(m.target_contexts, 1), 4),
    }
