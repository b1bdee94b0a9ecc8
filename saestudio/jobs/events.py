"""Live events: what a running job tells the outside world (metrics, status, checkpoints).

Events are a fast path, never the record: every event is published *after* the store has
committed what it describes, so a WebSocket client that misses one (or reconnects)
reloads from the database and loses nothing.

- :class:`RedisEventSink` — shared deployments (Redis broker): Redis pub/sub, which the
  API subscribes to and fans out to WebSockets.
- :class:`NullEventSink` — the embedded default: the worker is a separate process, so the
  API polls the database (metrics rows, status, heartbeat) instead of listening.
- :class:`MemoryEventSink` — jobs run in the same process as the reader (tests, a
  notebook, an API that runs a job inline): a bounded, thread-safe buffer to poll.

Channels: :func:`training_channel`, :func:`dataset_channel`, and :data:`GLOBAL_CHANNEL`
(status changes of every job, for ``/ws/events``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Any, Protocol

log = logging.getLogger(__name__)

GLOBAL_CHANNEL = "saestudio:events"


def training_channel(training_id: int | str) -> str:
    return f"saestudio:training:{training_id}"


def dataset_channel(dataset_id: int | str) -> str:
    return f"saestudio:dataset:{dataset_id}"


class EventSink(Protocol):
    """Where a job publishes events. Implementations must not raise: a lost event costs a
    client one poll, a raised one would cost the run."""

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
    """Redis pub/sub, events as JSON. Errors are logged (at most every 30 s) and dropped."""

    def __init__(self, url: str):
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._last_warning = 0.0

    def publish(self, channel: str, event: dict[str, Any]) -> None:
        try:
            self._client.publish(channel, json.dumps(event))
        except Exception as e:  # a dropped event must not fail a training
            now = time.monotonic()
            if now - self._last_warning > 30:
                self._last_warning = now
                log.warning("event not published to %s: %s", channel, e)


def make_event_sink(broker_url: str) -> EventSink:
    """Redis pub/sub when the broker is Redis; otherwise nothing (the API polls the DB)."""
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisEventSink(broker_url)
    return NullEventSink()
