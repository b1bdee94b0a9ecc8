"""The feature inspection job: every SAE of a finished run, one pass over a row range of
its activation dataset (:func:`saestudio.features.inspect_saes`), then the latents
indexed in the store. What :func:`saestudio.jobs.tasks.inspect_task` runs.

Like an extraction it reports progress, honours a stop request and a worker shutdown,
and heartbeats; a job whose worker died is re-queued by the watchdog and runs its pass
again from the start (an inspection is one pass: there is nothing to resume).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saestudio.jobs.adapter import ControlPoller, Heartbeat, JobLost, one_line
from saestudio.jobs.contracts import InspectionJob, InspectionStore, JobTiming
from saestudio.jobs.events import EventSink, training_channel

log = logging.getLogger(__name__)

LATENTS_FILE = "latents.jsonl"
SUMMARY_FILE = "summary.json"


def iter_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(byte offset, parsed record) for every line of a ``latents.jsonl``."""
    with path.open("rb") as f:
        offset = 0
        for line in f:
            if line.strip():
                yield offset, json.loads(line)
            offset += len(line)


def read_record(path: Path, offset: int) -> dict[str, Any]:
    """The record whose line starts at ``offset`` (from the index) of a ``latents.jsonl``."""
    with path.open("rb") as f:
        f.seek(offset)
        record: dict[str, Any] = json.loads(f.readline())
        return record


class _Stopped(Exception):
    """The pass ended early: a stop request, a worker shutdown or a lost job."""


def run_inspection(
    inspection_id: int,
    job: InspectionJob,
    store: InspectionStore,
    events: EventSink,
    *,
    hostname: str | None = None,
    timing: JobTiming | None = None,
    interrupt: threading.Event | None = None,
) -> str:
    """Inspect ``job.saes`` and index the results; returns completed, cancelled, failed,
    ``interrupted`` (worker shutting down: re-queued, the caller enqueues it again) or
    ``lost`` (the store gave the job to another worker: nothing recorded)."""
    from saestudio.features import inspect_saes

    timing = timing or JobTiming()
    hostname = hostname or socket.gethostname()
    channel = training_channel(job.training_id)
    control = ControlPoller(lambda: store.get_control(inspection_id), timing.poll_s)
    progress: dict[str, Any] = {"rows_done": 0, "progress": 0.0}

    def report(status: str, **fields: Any) -> None:
        store.set_status(inspection_id, status, **fields)
        event = {"type": "inspection", "training_id": job.training_id, "status": status}
        events.publish(channel, {**event, **{k: v for k, v in fields.items() if k != "summary"}})

    def on_progress(done: int, total: int) -> None:
        progress.update(rows_done=int(done), progress=round(done / max(total, 1), 4))

    def should_stop() -> bool:
        stopped = control.get() is not None or bool(interrupt and interrupt.is_set())
        return stopped or heart.lost

    heart = Heartbeat(
        lambda: store.heartbeat(inspection_id, hostname, **progress),
        timing.heartbeat_s,
        timing.stale_after_s,
    )
    try:
        with heart:
            report("running", worker=hostname, error=None, **progress)
            tokenizer, unembed = _decoding(job.activations)
            summaries = inspect_saes(
                {k: str(v) for k, v in job.saes.items()},
                str(job.activations),
                str(job.out),
                hook=job.hook,
                rows=job.rows,
                progress=on_progress,
                should_stop=should_stop,
                tokenizer=tokenizer,
                unembed=unembed,
            )
            heart.check()
            if should_stop():
                raise _Stopped
            summary = {}
            for label in job.saes:
                folder = job.out / label
                store.index_latents(inspection_id, label, iter_records(folder / LATENTS_FILE))
                summary[label] = _summary(summaries.get(label), folder)
            report("completed", summary=summary, rows_done=job.rows[1] - job.rows[0])
            return "completed"
    except JobLost as e:
        log.warning("inspection %s: %s; stopped without reporting", inspection_id, e)
        return "lost"
    except Exception as e:
        if heart.lost:
            return "lost"
        if should_stop():
            if control.value is None and interrupt is not None and interrupt.is_set():
                report("queued", **progress)
                return "interrupted"
            report("cancelled", **progress)
            return "cancelled"
        if not isinstance(e, _Stopped):
            log.exception("inspection %s failed", inspection_id)
        try:
            report("failed", error=one_line(e))
        except Exception:
            log.exception("inspection %s: could not record the failure", inspection_id)
        return "failed"


def _decoding(activations: Path) -> tuple[Any, Any]:
    """The dataset model's tokenizer (examples as text) and, for causal LMs, its
    unembedding ``W_U`` (logit lens); None for encoders such as MiniLM."""
    import torch

    from saestudio.activations.manifest import open_activation_dataset
    from saestudio.activations.models import load_model
    from saestudio.activations.text_data import load_tokenizer
    from saestudio.features import unembedding

    manifest = open_activation_dataset(activations)
    tokenizer = load_tokenizer(manifest.model)
    model = load_model(manifest.model, manifest.model_dtype, device="cpu")
    W_U = unembedding(model)
    unembed = None if W_U is None else W_U.detach().to(torch.float32).clone()
    del model
    return tokenizer, unembed


def _summary(returned: Any, folder: Path) -> dict[str, Any]:
    """The SAE's ``summary.json`` (what the library wrote), as the status shows it."""
    path = folder / SUMMARY_FILE
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    if hasattr(returned, "_asdict"):
        return dict(returned._asdict())
    return {}
