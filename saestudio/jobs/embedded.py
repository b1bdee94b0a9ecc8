"""The embedded worker: ``saestudio serve`` starts one Celery worker process beside the API,
on the SQLite broker under the data dir — nothing to install.

The worker is a real ``celery worker`` subprocess (solo pool, one job at a time), so a
training never shares the API's process or GIL, and a crash in one leaves the other up.

Restart recovery (:func:`start_local_worker`): the server holds an exclusive lock on
``DATA_DIR/local-worker.lock`` for its lifetime, and writes its worker's name in it. A
server that gets the lock knows the previous holder is gone (the kernel drops the lock of
a killed process), and with it that server's local worker: the jobs that worker still
shows as ``running`` are re-queued at once, instead of after the watchdog's stale window
(``SAESTUDIO_JOB_STALE_AFTER_S``, 60 s), which stays for remote workers.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from saestudio.jobs.celery_app import prepare_broker
from saestudio.settings import Settings

APP_MODULE = "saestudio.jobs.celery_app"
LOCK_FILE = "local-worker.lock"

log = logging.getLogger(__name__)

_held: dict[Path, int] = {}
"""Lock file → open descriptor, kept for the life of the process (closing it would drop
the lock)."""


def settings_env(settings: Settings) -> dict[str, str]:
    """``SAESTUDIO_*`` variables that make the worker's ``get_settings()`` equal
    ``settings`` (the broker spelled out, so both sides agree on the default). The API
    token stays out: the worker serves no requests."""
    flat: dict[str, object] = {}
    for name, value in settings.model_dump(exclude={"api_token"}).items():
        if isinstance(value, dict):  # a nested model (job timing): SAESTUDIO_JOB_HEARTBEAT_S
            flat.update({f"{name}_{key}": v for key, v in value.items()})
        else:
            flat[name] = value
    env = {f"SAESTUDIO_{name.upper()}": str(v) for name, v in flat.items() if v is not None}
    env["SAESTUDIO_BROKER_URL"] = settings.celery_broker
    env["SAESTUDIO_DATABASE_URL"] = settings.db_url
    return env


def start_worker(
    settings: Settings,
    *,
    include: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_file: Path | None = None,
    name: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``celery -A saestudio.jobs.celery_app worker --pool=solo`` on
    ``settings.queue``.

    ``include``: extra modules the worker imports (e.g. a store backend); ``env``: extra
    environment; output goes to ``log_file`` (default ``DATA_DIR/logs/worker.log``,
    appended — a pipe nobody reads would fill and stall the worker).
    """
    prepare_broker(settings.celery_broker)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_file or settings.data_dir / "logs" / "worker.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "celery", "-A", APP_MODULE, "worker",
        "--pool=solo", "--concurrency=1", "-Q", settings.queue,
        "-n", name or f"saestudio-{uuid.uuid4().hex[:8]}@%h",
        # no broadcast chatter: the SQLite transport has no fanout, and these only slow
        # the start down
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel=INFO",
    ]  # fmt: skip
    if include:
        cmd += ["--include", ",".join(include)]
    child_env = {k: v for k, v in os.environ.items() if k != "SAESTUDIO_API_TOKEN"}
    child_env.update(settings_env(settings), **(env or {}))
    with log_file.open("ab") as out:
        # own session: a Ctrl-C meant for `saestudio serve` must not reach the worker
        # directly; serve stops it with stop_worker, which lets the job checkpoint
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
            preexec_fn=_term_with_parent,
        )


def worker_name() -> str:
    """A fresh Celery node name, spelled out as the jobs record it (``name@host``)."""
    return f"saestudio-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"


def take_local_lock(data_dir: Path, name: str) -> str | None:
    """Lock ``DATA_DIR/local-worker.lock`` for this process and write ``name`` in it.

    Returns the name the previous holder wrote ("" when none), or None when another
    live server holds the lock (then nothing is written, and its worker is not ours to
    recover)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = (data_dir / LOCK_FILE).resolve()
    if path in _held:  # this process holds it already (a second app in one process)
        fd = _held[path]
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited: O_CLOEXEC
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        _held[path] = fd
    previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    os.ftruncate(fd, 0)
    os.pwrite(fd, name.encode() + b"\n", 0)
    return previous


def recover_local_jobs(settings: Settings, previous: str) -> list[tuple[str, int]]:
    """Re-queue (and enqueue) the jobs the previous server's local worker ``previous``
    left ``running``: it died with that server."""
    from saestudio.jobs.celery_app import make_celery
    from saestudio.jobs.tasks import enqueue
    from saestudio.store.jobstore import SqlJobStore
    from saestudio.store.migrate import upgrade

    upgrade(settings.db_url)  # a first start: the tables exist before anything reads them
    found = SqlJobStore(settings.db_url, settings.data_dir).requeue_worker(previous)
    if found:
        celery = make_celery(settings)
        for kind, job_id in found:
            log.warning("%s %s: its worker %s ended with the server; resuming", kind, job_id,
                        previous)  # fmt: skip
            enqueue(celery, kind, job_id)
    return [(str(kind), job_id) for kind, job_id in found]


def start_local_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """:func:`start_worker` as ``saestudio serve``'s own local worker: take the data dir's
    local-worker lock, re-queue what the previous server's worker left running, then
    start a worker under the name just written in the lock."""
    name = worker_name()
    previous = take_local_lock(settings.data_dir, name)
    if previous:
        recover_local_jobs(settings, previous)
    elif previous is None:
        log.warning(
            "another saestudio serve uses %s: its local worker's jobs are left to it",
            settings.data_dir,
        )
    return start_worker(settings, name=name)


def _term_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM the worker when its parent dies.

    `saestudio serve` stops its worker itself, but uvicorn re-raises SIGTERM after its
    graceful shutdown (the process dies before any ``finally``), and a SIGKILLed server
    runs no code at all; without this the worker would live on, orphaned. SIGTERM is a
    warm shutdown: a running job checkpoints and re-queues itself. The libc function is
    looked up in the parent (below): nothing is imported between fork and exec.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """SIGTERM (warm shutdown: the running job checkpoints and re-queues itself), then
    SIGKILL after ``timeout`` seconds. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
