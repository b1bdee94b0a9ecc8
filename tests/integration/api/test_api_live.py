"""The live hub: many sockets watching one run cost the API no more database queries
than one. With Redis, the worker's published events reach every socket and the sockets
cause no polling at all; on the embedded default, one poll per run serves all sockets.
SQLite and PostgreSQL databases."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from api_helpers import API
from fastapi.testclient import TestClient
from sqlalchemy import event
from starlette.testclient import WebSocketTestSession
from store_helpers import config, new_run, train_line

from saestudio.api.app import create_app
from saestudio.jobs.adapter import StoreCallback
from saestudio.jobs.contracts import JobTiming
from saestudio.jobs.events import RedisEventSink, training_channel
from saestudio.jobs.runner import _Reporter
from saestudio.settings import Settings
from saestudio.store.db import get_engine, session_scope
from saestudio.store.jobstore import SqlJobStore, SqlRunStore

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("SAESTUDIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")


class QueryCount:
    """Statements the API runs (any thread but the test's own, which plays the worker)."""

    def __init__(self, url: str) -> None:
        self.n = 0
        self._test_thread = threading.get_ident()
        self._engine = get_engine(url)
        event.listen(self._engine, "before_cursor_execute", self._count)

    def _count(self, *_: Any) -> None:
        if threading.get_ident() != self._test_thread:
            self.n += 1

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._count)


@contextmanager
def counting(url: str) -> Iterator[QueryCount]:
    q = QueryCount(url)
    try:
        yield q
    finally:
        q.close()


_RECEIVER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ws-receive")


def until(ws: WebSocketTestSession, want: Any, timeout: float = 15.0) -> dict[str, Any]:
    """The first message ``want`` accepts; fails after ``timeout`` seconds (the test's
    sockets then close, which ends the pending receive)."""
    end = time.monotonic() + timeout
    while True:
        msg = _RECEIVER.submit(ws.receive_json).result(max(end - time.monotonic(), 0.01))
        if want(msg):
            return msg


def open_sockets(
    client: TestClient, stack: ExitStack, tid: int, n: int
) -> list[WebSocketTestSession]:
    sockets = []
    for _ in range(n):
        ws = stack.enter_context(client.websocket_connect(f"{API}/ws/trainings/{tid}"))
        until(ws, lambda m: m["type"] == "status")  # the backlog ends with the status
        sockets.append(ws)
    return sockets


def steps_of(msg: dict[str, Any]) -> list[int]:
    return [r["step"] for r in msg["rows"]]


@pytest.fixture
def redis_settings(settings: Settings) -> Settings:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as e:
        if os.environ.get("SAESTUDIO_TEST_NO_REDIS"):
            pytest.skip(f"no Redis: {e}")
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({e})")
    return settings.model_copy(update={"broker_url": REDIS_URL})


def test_redis_fan_out_without_polling(redis_settings: Settings, tmp_path: Path) -> None:
    """1 then 10 sockets: no query while idle, every socket gets each metrics flush and
    status change of the worker's reporting code, for the same queries either way."""
    settings = redis_settings
    with session_scope(settings.db_url) as s:
        tid = new_run(s)
    jobs = SqlJobStore(settings.db_url, settings.data_dir)
    assert jobs.claim("training", tid, "w", 60.0)
    store = jobs.trainings
    sink = RedisEventSink(REDIS_URL)
    channel = training_channel(tid)
    flusher = StoreCallback(tid, store, sink, channel, JobTiming(), config())
    report = _Reporter(tid, store.set_status, sink, channel, "training")

    def round_trip(sockets: list[WebSocketTestSession], step: int) -> tuple[int, int]:
        """Queries while idle, then for one flush + one status change seen everywhere."""
        with counting(settings.db_url) as q:
            time.sleep(1.0)
            idle = q.n
            flusher.on_metrics(step, train_line(step))
            flusher.flush()
            for ws in sockets:
                msg = until(ws, lambda m: m["type"] == "metrics")
                assert steps_of(msg) == [step] and msg["published_at"] <= time.time()
            report("running", step=step, worker="w")
            for ws in sockets:
                msg = until(ws, lambda m: m["type"] == "status")
                assert (msg["status"], msg["step"]) == ("running", step)
            return idle, q.n

    with TestClient(create_app(settings)) as client, ExitStack() as stack:
        one = round_trip(open_sockets(client, stack, tid, 1), 1)
        many = open_sockets(client, stack, tid, 10)
        ten = round_trip(many, 2)
    assert one[0] == 0 and ten[0] == 0, (one, ten)  # nobody polls
    assert ten[1] <= one[1] <= 4, (one, ten)  # the status re-read, once for all sockets


def test_embedded_poll_is_shared(settings: Settings) -> None:
    """SQLite broker: 10 sockets cost the same polling as 1; each gets every new line."""
    with session_scope(settings.db_url) as s:
        tid = new_run(s)
    store = SqlRunStore(settings.db_url, settings.data_dir)
    rates = []
    with TestClient(create_app(settings)) as client, ExitStack() as stack:
        sockets: list[WebSocketTestSession] = []
        for n, step in ((1, 1), (10, 2)):
            sockets += open_sockets(client, stack, tid, n - len(sockets))
            with counting(settings.db_url) as q:
                time.sleep(1.5)
                rates.append(q.n)
            store.add_metrics(tid, [train_line(step)])
            for ws in sockets:
                assert steps_of(until(ws, lambda m: m["type"] == "metrics")) == [step]
    one, ten = rates
    assert one > 0, "the embedded feed polls the database"
    assert ten <= one * 1.5 + 3, rates  # not 10x: one poll for all sockets


def test_redis_api_writes_reach_the_sockets(redis_settings: Settings) -> None:
    """With Redis nothing polls, so a write through the API (here: pause, then delete)
    must announce itself: the run's socket and the job list both see it."""
    settings = redis_settings
    with session_scope(settings.db_url) as s:
        tid = new_run(s)
    with TestClient(create_app(settings)) as client, ExitStack() as stack:
        [run] = open_sockets(client, stack, tid, 1)
        jobs = stack.enter_context(client.websocket_connect(f"{API}/ws/events"))
        assert until(jobs, lambda m: m.get("id") == tid)["status"] == "queued"
        client.post(f"{API}/trainings/{tid}/control", json={"action": "pause"})
        assert until(run, lambda m: m["type"] == "status")["status"] == "paused"
        assert until(jobs, lambda m: m.get("id") == tid)["status"] == "paused"
        client.delete(f"{API}/trainings/{tid}")
        assert until(run, lambda m: m["type"] == "error")
        want = {"type": "deleted", "kind": "training", "id": tid}
        assert until(jobs, lambda m: m["type"] == "deleted") == want
