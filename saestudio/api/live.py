"""The API's live hub: one reader per watched topic (a run, or the job lists), shared by
every WebSocket watching it, so the database work does not grow with the watchers.

A topic's :class:`Feed` owns one :class:`Reader` and a thread. ``prime`` marks where
"now" is; ``read`` returns the WebSocket messages for what changed since. Each message is
serialised once and handed to every :class:`Subscription` (an asyncio queue on the
socket's loop). Where the changes come from depends on the deployment:

- **Redis broker (teams).** One pattern subscription per API process
  (:func:`saestudio.jobs.events.listen`, on a thread) receives every event of the
  deployment. A run's metric lines go from the event straight to its sockets (no
  database read); any other event (status, progress heartbeat, checkpoint, an API write)
  wakes the topic's feed, which re-reads the run's status and checkpoints once for all
  its sockets. Writes through the API publish a notice (:class:`WriteNotices`) so every
  API process hears them. If the subscription drops, every socket is closed (code 1013)
  and the browser reconnects and reloads from the database: nothing is lost.
- **Otherwise (the embedded SQLite default).** Nobody publishes; each feed polls the
  database every :data:`POLL_S` while it has subscribers: one poll per run, whatever the
  number of sockets.

A socket subscribes *before* reading its own backlog, and the feed is primed before the
subscription returns, so every change is in the backlog, in a live message, or in both
(the socket drops what it already sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saestudio.jobs.events import (
    GLOBAL_CHANNEL,
    RedisEventSink,
    dataset_channel,
    is_redis,
    listen,
    training_channel,
)
from saestudio.store.repo import NotFound

log = logging.getLogger(__name__)

POLL_S = 0.25
"""Database poll period of an embedded feed; also the least time between two reads of a
Redis-woken feed (a burst of events costs one read)."""
MAX_PENDING = 2000
"""Messages a socket may fall behind by before it is closed to reload (code 1013)."""
READY_S = 10.0
"""How long a new socket waits for the Redis subscription or a feed's first read."""

Topic = tuple[str, int] | tuple[str]
"""``("training", id)`` or ``("jobs",)``."""

RESYNC = {"type": "_resync"}
"""Put in a subscription when its messages stopped being complete: the socket closes."""


class Reader(Protocol):
    """What a feed reads (blocking: it runs on the feed's thread)."""

    def prime(self) -> None:
        """Remember the current state: later reads return only what changed since."""

    def read(self) -> list[dict[str, Any]]:
        """The messages for what changed since the last read (``NotFound``: gone)."""

    def on_event(self, event: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Messages carried by a published event itself, or None: read the database."""


class Subscription:
    """One socket's queue of ``(message, json text)`` pairs, on the socket's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[dict[str, Any], str]] = asyncio.Queue()
        self._behind = False

    def put(self, item: tuple[dict[str, Any], str]) -> None:
        """On the socket's loop only (:func:`_deliver`)."""
        if self._behind:
            return
        if self.queue.qsize() >= MAX_PENDING:
            self._behind = True
            item = (RESYNC, "")
        self.queue.put_nowait(item)


def _deliver(subs: list[Subscription], items: list[tuple[dict[str, Any], str]]) -> None:
    for sub in subs:
        for item in items:
            sub.put(item)


class Feed:
    """One topic's reader, its thread and its subscriptions. ``poll_s`` None: read only
    when woken (Redis); otherwise also every ``poll_s`` seconds."""

    def __init__(self, topic: Topic, reader: Reader, poll_s: float | None, on_gone: Any):
        self.topic, self.reader, self.poll_s = topic, reader, poll_s
        self.subscribers: set[Subscription] = set()
        self.ready = threading.Event()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._on_gone = on_gone
        self._thread = threading.Thread(target=self._run, name=f"feed-{topic}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def fan_out(self, messages: list[dict[str, Any]]) -> None:
        """Serialise each message once; one callback per event loop, not per socket."""
        if not messages:
            return
        items = [(m, json.dumps(m) if m is not RESYNC else "") for m in messages]
        by_loop: dict[asyncio.AbstractEventLoop, list[Subscription]] = {}
        for sub in list(self.subscribers):
            by_loop.setdefault(sub.loop, []).append(sub)
        for loop, subs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is gone: nobody to tell
                loop.call_soon_threadsafe(_deliver, subs, items)

    def handle(self, event: dict[str, Any]) -> None:
        """A published event for this topic (on the Redis thread)."""
        if not self.ready.is_set():
            self.wake()  # read once primed: the prime may already hold this change
            return
        messages = self.reader.on_event(event)
        if messages is None:
            self.wake()
        else:
            self.fan_out(messages)

    def _run(self) -> None:
        try:
            self.reader.prime()
        except NotFound as e:
            self._gone(e)
            return
        except Exception as e:  # the database is away: these sockets cannot go live
            log.warning("live feed %s not started: %s", self.topic, e)
            self._gone(None)
            return
        finally:
            self.ready.set()
        while True:
            self._wake.wait(self.poll_s)
            if self._stopped.is_set():
                return
            self._wake.clear()
            try:
                messages = self.reader.read()
            except NotFound as e:
                self._gone(e)
                return
            except Exception as e:  # a database hiccup: the next read catches up
                log.warning("live feed %s: read failed: %s", self.topic, e)
                messages = []
            self.fan_out(messages)
            if self._stopped.wait(POLL_S if self.poll_s is None else 0):
                return

    def _gone(self, error: NotFound | None) -> None:
        self._on_gone(self)
        if error is not None:
            self.fan_out([{"type": "error", "detail": str(error)}])
        self.fan_out([RESYNC])


class LiveHub:
    """The feeds of one API process, and its one Redis subscription when the broker is
    Redis (started with the first socket; :meth:`close` at shutdown)."""

    def __init__(self, broker_url: str) -> None:
        self.redis_url = broker_url if is_redis(broker_url) else None
        self._feeds: dict[Topic, Feed] = {}
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    @property
    def pushes_metrics(self) -> bool:
        """Metric lines arrive with the events (Redis), not from reads."""
        return self.redis_url is not None

    @asynccontextmanager
    async def watch(
        self, topic: Topic, reader: Callable[[], Reader]
    ) -> AsyncIterator[Subscription]:
        """A subscription to ``topic`` (its feed primed), for the ``async with`` block."""
        if self.redis_url is not None:
            self._listen()
            if not await run_in_threadpool(self._listening.wait, READY_S):
                raise ConnectionError("live events: no Redis subscription")
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            feed = self._feeds.get(topic)
            if feed is None:
                poll_s = None if self.redis_url else POLL_S
                feed = self._feeds[topic] = Feed(topic, reader(), poll_s, self._forget)
            feed.subscribers.add(sub)
        try:
            await run_in_threadpool(feed.ready.wait, READY_S)
            yield sub
        finally:
            with self._lock:
                feed.subscribers.discard(sub)
                if not feed.subscribers and self._feeds.get(topic) is feed:
                    del self._feeds[topic]
                    feed.stop()

    def watched(self) -> list[Topic]:
        with self._lock:
            return list(self._feeds)

    def _forget(self, feed: Feed) -> None:
        with self._lock:
            if self._feeds.get(feed.topic) is feed:
                del self._feeds[feed.topic]

    def dispatch(self, channel: str, event: dict[str, Any]) -> None:
        """Route one published event (``channel`` without the namespace) to its feeds."""
        kind, _, ident = channel.partition(":")
        with self._lock:
            feeds = dict(self._feeds)
        jobs = feeds.get(("jobs",))
        if kind == "training" and ident.isdigit():
            run = feeds.get(("training", int(ident)))
            if run is not None:
                run.handle(event)
        elif channel == GLOBAL_CHANNEL and not any(k in event for k in _JOB_KEYS):
            for feed in feeds.values():  # a write without one job (create, bulk delete)
                feed.wake()
        if jobs is not None and event.get("type") != "metrics":
            jobs.wake()

    def resync(self) -> None:
        """Events may have been lost: drop every feed; their sockets close and reload."""
        with self._lock:
            feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            feed.stop()
            feed.fan_out([RESYNC])

    def _listen(self) -> None:
        with self._lock:
            if self._listener is not None or self.redis_url is None:
                return
            url = self.redis_url

            def subscribed() -> None:
                if self._listening.is_set():
                    self.resync()  # a reconnect: what was published meanwhile is lost
                self._listening.set()

            self._listener = threading.Thread(
                target=listen,
                args=(url, self.dispatch, subscribed, self._stop),
                name="live-events",
                daemon=True,
            )
            self._listener.start()

    def close(self) -> None:
        self._stop.set()
        self.resync()
        if self._listener is not None:
            self._listener.join(timeout=5)


_JOB_KEYS = ("training_id", "dataset_id")

_JOB_PATH = re.compile(r"/(trainings|datasets)/(\d+)(?:/|$)")


class WriteNotices:
    """Pure ASGI middleware for the Redis deployment: after a successful write request
    (anything but GET/HEAD/OPTIONS) under the API, publish ``{"type": "changed"}`` on the
    run's or dataset's channel (the global one for writes naming no job), so every API
    process's feeds re-read what the write changed."""

    def __init__(self, app: ASGIApp, broker_url: str, prefix: str) -> None:
        self.app, self.prefix = app, prefix
        self.sink = RedisEventSink(broker_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or not path.startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        if status < 400:
            channel, event = _notice(path[len(self.prefix) :])
            await run_in_threadpool(self.sink.publish, channel, event)


def _notice(path: str) -> tuple[str, dict[str, Any]]:
    """The channel and event announcing a write to ``path`` (under the API prefix)."""
    found = _JOB_PATH.search(path)
    if found is None:
        return GLOBAL_CHANNEL, {"type": "changed"}
    job_id = int(found[2])
    if found[1] == "trainings":
        return training_channel(job_id), {"type": "changed", "training_id": job_id}
    return dataset_channel(job_id), {"type": "changed", "dataset_id": job_id}
