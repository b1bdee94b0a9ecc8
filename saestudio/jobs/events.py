"""Live events: what a running job tells the outside world (metrics, status, progress,
checkpoints), and the Redis wire they travel on in a team deployment.

Events are a fast path, never the record: every event is published *after* the store has
committed what it describes, so a WebSocket client that misses one (or reconnects)
reloads from the database and loses nothing.

- :class:`RedisEventSink` — team deployments (Redis broker): Redis pub/sub. Each API
  process subscribes once (:func:`listen`) and fans the events out to its WebSockets
  (:mod:`saestudio.api.live`).
- :class:`NullEventSink` — the embedded default (SQLite broker): nobody listens; the API
  reads progress from the database with one shared poll per watched run.
- :class:`MemoryEventSink` — jobs run in the same process as the reader (tests, a
  notebook): a bounded, thread-safe buffer to read.

Channels are logical names — :func:`training_channel`, :func:`dataset_channel` and
:data:`GLOBAL_CHANNEL` (status changes of every job). On Redis they live under
``saestudio:<db>:`` (:func:`redis_namespace`): pub/sub ignores the database number, and
two deployments sharing one Redis server on different databases must not hear each other.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

GLOBAL_CHANNEL = "events"


def training_channel(training_id: int | str) -> str:
    return f"training:{training_id}"


def dataset_channel(dataset_id: int | str) -> str:
    return f"dataset:{dataset_id}"


def redis_namespace(url: str) -> str:
    """``saestudio:<db>:`` for ``redis://host:port/<db>`` (db 0 when the URL names none)."""
    db = urlsplit(url).path.strip("/") or "0"
    return f"saestudio:{db}:"


class EventSink(Protocol):
    """Where a job publishes events. Implementations must not raise: a lost event costs a
    client a reconnect, a raised one would cost the run."""

    def publish(self, channel: str, event: dict[str, Any]) -> None: ...


class NullEventSink:
    """Publishes nothing (the embedded API reads progress from the database)."""

    def publish(self, channel: str, event: dict[str, Any]) -> None:
        return None


class MemoryEventSink:
    """Keeps the last ``maxlen`` events per channel, each with a sequence number, for
    readers in the same process; :meth:`read` returns those after a sequence number."""

    def __init__(self, maxlen: int = 10_000):
        self._maxlen = maxlen
        self._seq = 0
        self._events: dict[str, deque[tuple[int, dict[str, Any]]]] = {}
        self._cond = threading.Condition()

    def publish(self, channel: str, event: dict[str, Any]) -> None:
        with self._cond:
            self._seq += 1
            buf = self._events.setdefault(channel, deque(maxlen=self._maxlen))
            buf.append((self._seq, event))
            self._cond.notify_all()

    def read(
        self, channel: str, after: int = 0, timeout: float = 0.0
    ) -> list[tuple[int, dict[str, Any]]]:
        """Events of ``channel`` with a sequence number above ``after``, waiting up to
        ``timeout`` seconds for the first one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self._events.get(channel, ()) if e[0] > after]
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                self._cond.wait(left)


class RedisEventSink:
    """Redis pub/sub, events as JSON with ``published_at`` (Unix time) added: the API
    passes it on to the browser, so a client on the same clock can measure the delay.
    Errors are logged (at most every 30 s) and dropped."""

    def __init__(self, url: str):
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._namespace = redis_namespace(url)
        self._last_warning = 0.0

    def publish(self, channel: str, event: dict[str, Any]) -> None:
        try:
            body = json.dumps({**event, "published_at": time.time()})
            self._client.publish(self._namespace + channel, body)
        except Exception as e:  # a dropped event must not fail a training
            now = time.monotonic()
            if now - self._last_warning > 30:
                self._last_warning = now
                log.warning("event not published to %s: %s", channel, e)


def make_event_sink(broker_url: str) -> EventSink:
    """Redis pub/sub when the broker is Redis; otherwise nothing (the API polls the DB)."""
    if is_redis(broker_url):
        return RedisEventSink(broker_url)
    return NullEventSink()


def is_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://"))


def listen(
    url: str,
    on_event: Callable[[str, dict[str, Any]], None],
    on_subscribed: Callable[[], None],
    stop: threading.Event,
    retry_s: float = 1.0,
) -> None:
    """Every event of the deployment (one pattern subscription on one connection) to
    ``on_event(channel, event)`` until ``stop`` is set; blocking, for a thread.

    ``on_subscribed`` runs each time the subscription is (re)established: events published
    while the connection was down are lost, so the caller makes its readers resync from
    the database then. A connection error is retried every ``retry_s``."""
    import redis

    namespace = redis_namespace(url)
    while not stop.is_set():
        client = redis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=10)
        pubsub = client.pubsub()
        try:
            pubsub.psubscribe(namespace + "*")
            while not stop.is_set():
                message = pubsub.get_message(timeout=0.5)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    on_subscribed()
                elif message["type"] == "pmessage":
                    channel = message["channel"].decode()[len(namespace) :]
                    try:
                        event = json.loads(message["data"])
                    except ValueError:
                        log.warning("not an event on %s: %.100r", channel, message["data"])
                        continue
                    try:
                        on_event(channel, event)
                    except Exception:  # one bad event must not end the subscription
                        log.exception("event on %s not delivered", channel)
        except redis.RedisError as e:
            log.warning("event subscription to %s lost (%s); retrying", namespace, e)
            stop.wait(retry_s)
        finally:
            pubsub.close()
            client.close()
