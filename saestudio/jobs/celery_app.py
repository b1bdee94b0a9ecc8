"""The Celery app: broker from :class:`~saestudio.settings.Settings`, JSON only, late acks.

``celery -A saestudio.jobs.celery_app worker`` uses the module-level :data:`app` (built
from the environment). The API and tests build their own with :func:`make_celery` and
send tasks by name (see :mod:`saestudio.jobs.tasks`), so they need not import the tasks.

There is no result backend: a job's state lives in the database (trainings,
activation_datasets), written by the job itself.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_init

from saestudio.settings import Settings, get_settings

SQLITE_PREFIX = "sqla+sqlite:///"


def sqlite_broker_path(broker_url: str) -> Path | None:
    """The database file of kombu's SQLAlchemy/SQLite transport, else None."""
    if broker_url.startswith(SQLITE_PREFIX):
        return Path(broker_url[len(SQLITE_PREFIX) :])
    return None


def prepare_broker(broker_url: str) -> None:
    """Create the SQLite broker's folder and put the file in WAL mode (persistent in the
    file): the API publishes while the worker polls, and rollback journals would make
    one of them wait on the other's lock. No-op for other brokers."""
    path = sqlite_broker_path(broker_url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def make_celery(settings: Settings, *, prepare: bool = True) -> Celery:
    """A Celery app for ``settings`` (``prepare``: create the SQLite broker file now)."""
    broker = settings.celery_broker
    if prepare:
        prepare_broker(broker)
    app = Celery("saestudio", broker=broker, include=["saestudio.jobs.tasks"])
    conf: dict[str, Any] = dict(
        # a job is acked when it ends, so a broker that can redeliver (Redis) does so
        # when a worker dies; the heartbeat watchdog covers the brokers that cannot
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # one job at a time per worker: a training holds the GPU for hours
        worker_prefetch_multiplier=1,
        # JSON only: a pickle from the broker would run code in the worker
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=settings.queue,
        broker_connection_retry_on_startup=True,
        # a broker hiccup must not kill a training that is checkpointing fine
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    if sqlite_broker_path(broker) is not None:
        # handed to create_engine (so never polling_interval here): wait on a busy file
        conf["broker_transport_options"] = {"connect_args": {"timeout": 30}}
    app.conf.update(conf)
    return app


@worker_init.connect
def _prepare_on_worker_start(sender: Any = None, **_: Any) -> None:
    """``saestudio worker`` / ``celery worker``: the SQLite broker's folder must exist."""
    if sender is not None:
        prepare_broker(str(sender.app.conf.broker_url))


# the worker entry; side-effect free so that importing this module touches no disk
app = make_celery(get_settings(), prepare=False)
