"""Celery tasks (training, extraction, feature inspection, ping) and the watchdog that re-queues dead jobs.

A task carries only an id; it loads the job from the store
(:class:`~saestudio.jobs.contracts.JobStore`), claims it
and calls the runner. The claim is what makes delivery effectively exactly-once: a
message delivered twice (Redis redelivery, the watchdog and a redelivery both) finds the
job claimed by a live worker, or finished, and does nothing.

Crash recovery: each running job heartbeats. Every worker runs a watchdog thread that
asks the store for running jobs whose heartbeat is older than ``stale_after_s`` (their
worker died: kill -9, a lost machine), moves them back to ``queued`` and enqueues them;
the next free worker resumes them from their last checkpoint. This works with every
broker — kombu's SQLite transport never redelivers a message whose consumer died.

A worker shutting down gracefully (SIGTERM, :func:`saestudio.jobs.embedded.stop_worker`)
makes the running job checkpoint and re-queue itself.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.signals import worker_ready, worker_shutting_down

from saestudio.jobs.celery_app import app
from saestudio.jobs.contracts import JobKind, JobStore, JobTiming
from saestudio.jobs.events import (
    EventSink,
    dataset_channel,
    make_event_sink,
    training_channel,
)
from saestudio.settings import get_settings

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

TRAIN_TASK = "saestudio.train"
EXTRACT_TASK = "saestudio.extract"
INSPECT_TASK = "saestudio.inspect"
PING_TASK = "saestudio.ping"
TASK_FOR: dict[str, str] = {
    "training": TRAIN_TASK,
    "extraction": EXTRACT_TASK,
    "inspection": INSPECT_TASK,
}

DATASET_WAIT_S = 1.0
"""Pause before re-queueing a training whose activation dataset is not extracted yet."""

SHUTDOWN = threading.Event()
"""Set when this worker starts a warm shutdown: the running job checkpoints and re-queues."""


_store_factory: Callable[[], JobStore] | None = None


def set_store_factory(factory: Callable[[], JobStore] | None) -> None:
    """Choose how tasks get their store (the DB layer, or a test double)."""
    global _store_factory
    _store_factory = factory


def get_store() -> JobStore:
    if _store_factory is None:
        # the database named by the settings (SQLite by default, PostgreSQL for teams)
        from saestudio.store.jobstore import default_job_store

        return default_job_store()
    return _store_factory()


@lru_cache
def _events(broker_url: str) -> EventSink:
    return make_event_sink(broker_url)


def _announce(events: EventSink, kind: JobKind, job_id: int, status: str) -> None:
    """A status the store recorded outside the runner, to the live readers."""
    if kind == "training":
        channel, key = training_channel(job_id), "training_id"
    else:
        channel, key = dataset_channel(job_id), "dataset_id"
    events.publish(channel, {"type": "status", key: job_id, "status": status})


def enqueue(celery: Celery, kind: JobKind, job_id: int) -> None:
    """Send a job's task to the queue (by name: the sender need not import the tasks)."""
    celery.send_task(TASK_FOR[kind], args=[job_id], queue=celery.conf.task_default_queue)


def _hostname(task: Task) -> str:
    return str(task.request.hostname or socket.gethostname())


def _deferred(celery: Celery, kind: JobKind, job_id: int) -> bool:
    """A worker that is shutting down may still take one message (the job it just
    re-queued, say): hand it back untouched instead of starting the job."""
    if not SHUTDOWN.is_set():
        return False
    enqueue(celery, kind, job_id)
    return True


@contextmanager
def _beating(beat: Callable[[], object], every_s: float) -> Iterator[None]:
    """Heartbeat a job just claimed while its runner is imported (torch takes seconds):
    a short stale window must not see it dead before the runner's own heartbeat starts."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                beat()
            except Exception as e:  # the store is briefly away: the next beat may do
                log.warning("heartbeat failed: %s", e)

    thread = threading.Thread(target=loop, name="claim-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@app.task(name=TRAIN_TASK, bind=True)
def train_task(self: Task, training_id: int) -> str:
    """Train (or resume) one run; returns its status, ``skipped`` when not claimed. The
    claim comes before the runner (and torch) is imported: a job re-queued by a restart
    shows ``running`` on its new worker as soon as the worker takes it."""
    if _deferred(self.app, "training", training_id):
        return "deferred"
    store, timing, host = get_store(), get_settings().job, _hostname(self)
    job = store.training_job(training_id)
    gate, why = store.dataset_gate(training_id) if job else ("ready", None)
    if gate == "wait":
        # its activation dataset is still being extracted (the one-click demo queues
        # both at once): back of the queue, so a single worker extracts it first
        time.sleep(DATASET_WAIT_S)
        enqueue(self.app, "training", training_id)
        return "waiting"
    if job is None or not store.claim("training", training_id, host, timing.stale_after_s):
        log.info("training %s: not claimable (gone, running elsewhere or ended)", training_id)
        return "skipped"
    cfg, run_dir = job
    if gate == "failed":
        store.trainings.set_status(training_id, "failed", error=why, worker=host)
        _announce(_events(str(self.app.conf.broker_url)), "training", training_id, "failed")
        return "failed"
    with _beating(lambda: store.trainings.heartbeat(training_id, host), timing.heartbeat_s):
        from saestudio.jobs.runner import run_training

    events = _events(str(self.app.conf.broker_url))
    status = run_training(
        training_id,
        cfg,
        run_dir,
        store.trainings,
        events,
        hostname=host,
        timing=timing,
        interrupt=SHUTDOWN,
    )
    if status == "interrupted":
        enqueue(self.app, "training", training_id)
    if status == "completed":
        _queue_inspection(self.app, store, training_id, get_settings().inspect_rows)
    return status


def _queue_inspection(celery: Celery, store: JobStore, training_id: int, rows: int) -> None:
    """A completed run's SAEs are inspected next, over the last ``rows`` rows of its
    dataset (``Settings.inspect_rows``)."""
    try:
        inspection_id = store.queue_inspection(training_id, rows)
    except Exception:  # the run stays completed: the Features tab offers to inspect it
        log.exception("training %s: inspection not queued", training_id)
        return
    if inspection_id is not None:
        enqueue(celery, "inspection", inspection_id)


@app.task(name=EXTRACT_TASK, bind=True)
def extract_task(self: Task, dataset_id: int) -> str:
    """Extract (or continue) one activation dataset; returns its status (claimed first,
    as :func:`train_task`)."""
    if _deferred(self.app, "extraction", dataset_id):
        return "deferred"
    store, timing, host = get_store(), get_settings().job, _hostname(self)
    cfg = store.extraction_job(dataset_id)
    if cfg is None or not store.claim("extraction", dataset_id, host, timing.stale_after_s):
        log.info("extraction %s: not claimable", dataset_id)
        return "skipped"
    with _beating(lambda: store.datasets.heartbeat(dataset_id, host), timing.heartbeat_s):
        from saestudio.jobs.runner import run_extraction

    events = _events(str(self.app.conf.broker_url))
    status = run_extraction(
        dataset_id, cfg, store.datasets, events, hostname=host, timing=timing, interrupt=SHUTDOWN
    )
    if status == "interrupted":
        enqueue(self.app, "extraction", dataset_id)
    return status


@app.task(name=INSPECT_TASK, bind=True)
def inspect_task(self: Task, inspection_id: int) -> str:
    """Inspect every SAE of a run (one pass over its rows); returns the status (claimed
    first, as :func:`train_task`)."""
    if _deferred(self.app, "inspection", inspection_id):
        return "deferred"
    store, timing, host = get_store(), get_settings().job, _hostname(self)
    job = store.inspection_job(inspection_id)
    if job is None or not store.claim("inspection", inspection_id, host, timing.stale_after_s):
        log.info("inspection %s: not claimable", inspection_id)
        return "skipped"
    from saestudio.jobs.inspect_job import run_inspection

    events = _events(str(self.app.conf.broker_url))
    status = run_inspection(
        inspection_id, job, store.inspections, events, hostname=host, timing=timing,
        interrupt=SHUTDOWN,
    )  # fmt: skip
    if status == "interrupted":
        enqueue(self.app, "inspection", inspection_id)
    return status


_PING_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


@app.task(name=PING_TASK, bind=True)
def ping_task(self: Task, name: str) -> str:
    """Write ``pong <worker>`` to ``DATA_DIR/pings/<name>``: proves a worker consumes the
    queue, without a result backend. ``name`` is a plain file name, never a path."""
    if not _PING_NAME.fullmatch(name):
        raise ValueError(f"ping: {name!r} is not a plain file name")
    folder = get_settings().data_dir / "pings"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"pong {_hostname(self)}\n")
    return "pong"


# ---- worker lifecycle ------------------------------------------------------------------------


def recover_stale(store: JobStore, celery: Celery, stale_after_s: float) -> list[tuple[str, int]]:
    """One watchdog pass: re-queue the jobs whose worker stopped heartbeating."""
    found = store.claim_stale(stale_after_s)
    events = _events(str(celery.conf.broker_url))
    for kind, job_id in found:
        log.warning("%s %s: no heartbeat for %.0f s; re-queued", kind, job_id, stale_after_s)
        _announce(events, kind, job_id, "queued")
        enqueue(celery, kind, job_id)
    return list(found)


def watchdog(celery: Celery, timing: JobTiming, stop: threading.Event) -> None:
    """Run :func:`recover_stale` every ``watchdog_every_s`` until ``stop`` is set."""
    while True:
        try:
            recover_stale(get_store(), celery, timing.stale_after_s)
        except NotImplementedError as e:
            log.warning("watchdog off: %s", e)
            return
        except Exception as e:  # the store or broker is briefly away: try again later
            log.warning("watchdog pass failed: %s", e)
        if stop.wait(timing.watchdog_every_s):
            return


@worker_ready.connect
def _start_watchdog(sender: Any = None, **_: Any) -> None:

    celery = getattr(sender, "app", None) or app
    threading.Thread(
        target=watchdog,
        args=(celery, get_settings().job, SHUTDOWN),
        name="job-watchdog",
        daemon=True,
    ).start()


@worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    SHUTDOWN.set()
