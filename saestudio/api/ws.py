"""Live progress: ``/ws/trainings/{id}?since_step=N`` for one run, ``/ws/events`` for
the job lists.

On connect a socket subscribes to its topic's shared feed (:mod:`saestudio.api.live`:
Redis events in a team deployment, one database poll per run otherwise), then sends its
own backlog from the database — every metric line after ``since_step`` (a reconnecting
client passes the last step it saw), the checkpoints after it and the status — and then
the feed's messages, less what the backlog already held.

Messages on ``/ws/trainings/{id}``: ``{"type": "metrics", "rows": [{step, sae, kind,
metrics}, ...]}`` (live ones from a Redis event add ``published_at``, the worker's Unix
time of publishing), ``{"type": "status", "status", "step", "total_steps", "progress",
"eta_seconds", "error", "control"}``, ``{"type": "checkpoint", "id", "sae", "step",
"is_best", "eval_loss"}``; ``{"type": "error", "detail"}`` then close (1008) for an
unknown or deleted run. On ``/ws/events``: ``{"type": "training" | "activation_dataset",
"id", "name", "status", "progress", ...}`` (trainings add step, total_steps, eta_seconds,
latest_metrics; datasets contexts, target_contexts, rows) for every job on connect and
whenever one changes, and ``{"type": "deleted", "kind", "id"}``. A socket that fell
behind, or whose events may have been lost (Redis reconnected or unreachable), is closed
with 1013 (try again later): the browser reconnects and reloads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from saestudio.api.live import RESYNC, LiveHub, Subscription
from saestudio.store import repo
from saestudio.store.db import session_scope

BATCH = 5000
"""Most lines one read returns (a long backlog arrives over a few messages)."""

router = APIRouter()


class _Cursor:
    """What a reader has returned: metric ids at its last step (lines at one step arrive
    per SAE and kind, possibly in different commits), checkpoint ids and the status."""

    def __init__(self, since_step: int) -> None:
        self.step = since_step + 1
        self.seen: set[int] = set()
        self.status: dict[str, Any] | None = None
        self.checkpoints: set[int] = set()


def _status(row: Any) -> dict[str, Any]:
    return {
        "type": "status",
        "status": row.status,
        "control": row.control,
        "step": row.step,
        "total_steps": row.total_steps,
        "progress": row.progress,
        "eta_seconds": row.eta_seconds,
        "error": row.error,
    }


def _new_metrics(session: Session, training_id: int, cur: _Cursor) -> tuple[list[Any], bool]:
    """Lines not returned yet (at most :data:`BATCH`), and whether more may follow."""
    lines = repo.metrics(session, training_id, start_step=cur.step, limit=BATCH)
    new = [m for m in lines if m.id not in cur.seen]
    if new:
        # keep re-reading the last step: another SAE / kind at it may still arrive
        cur.step = new[-1].step
        cur.seen = {m.id for m in lines if m.step >= cur.step}
    return new, len(lines) == BATCH and bool(new)


def _rows(lines: list[Any]) -> dict[str, Any]:
    rows = [{"step": m.step, "sae": m.sae, "kind": m.kind, "metrics": m.metrics} for m in lines]
    return {"type": "metrics", "rows": rows}


def _new_checkpoints(session: Session, training_id: int, cur: _Cursor) -> list[dict[str, Any]]:
    out = []
    for c in repo.list_checkpoints(session, training_id):
        if c.id not in cur.checkpoints:
            cur.checkpoints.add(c.id)
            out.append(
                {
                    "type": "checkpoint",
                    "id": c.id,
                    "sae": c.sae,
                    "step": c.step,
                    "is_best": c.is_best,
                    "eval_loss": c.eval_loss,
                }
            )
    return out


def _new_status(session: Session, training_id: int, cur: _Cursor) -> list[dict[str, Any]]:
    snap = _status(repo.get_training(session, training_id))  # NotFound: deleted
    if snap == cur.status:
        return []
    cur.status = snap
    return [snap]


class RunReader:
    """A run's shared reader. ``live_metrics``: metric lines come with the Redis events,
    so reads cover only status and checkpoints."""

    def __init__(self, url: str, training_id: int, live_metrics: bool) -> None:
        self.url, self.training_id, self.live_metrics = url, training_id, live_metrics
        self.cur = _Cursor(-1)

    def prime(self) -> None:
        with session_scope(self.url) as s:
            self.cur.status = _status(repo.get_training(s, self.training_id))
            self.cur.checkpoints = {c.id for c in repo.list_checkpoints(s, self.training_id)}
            last = None if self.live_metrics else repo.last_step(s, self.training_id)
            if last is not None:
                at_last = repo.metrics(s, self.training_id, start_step=last, limit=None)
                self.cur.step, self.cur.seen = last, {m.id for m in at_last}

    def read(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with session_scope(self.url) as s:
            more = not self.live_metrics
            while more:
                new, more = _new_metrics(s, self.training_id, self.cur)
                if new:
                    out.append(_rows(new))
            out += _new_checkpoints(s, self.training_id, self.cur)
            out += _new_status(s, self.training_id, self.cur)
        return out

    def on_event(self, event: dict[str, Any]) -> list[dict[str, Any]] | None:
        if not (self.live_metrics and event.get("type") == "metrics"):
            return None
        rows = [
            {"step": step, "sae": sae, "kind": kind, "metrics": body}
            for (sae, step, kind), body in sorted(
                repo.line_rows(event["lines"]).items(), key=_order
            )
        ]
        return [{"type": "metrics", "rows": rows, "published_at": event.get("published_at")}]


def _order(item: tuple[tuple[str, int, str], Any]) -> tuple[int, str, str]:
    (sae, step, kind), _ = item
    return step, sae, kind  # the table's order


class _RunView:
    """What one socket has sent: the last step per (SAE, kind), checkpoint ids, the
    status. Drops the feed's messages the backlog already held."""

    def __init__(self, since_step: int) -> None:
        self.since_step = since_step
        self.last: dict[tuple[str, str], int] = {}
        self.checkpoints: set[int] = set()
        self.status: dict[str, Any] | None = None

    def keep(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """``msg`` itself, a part of it, or None (nothing new for this socket)."""
        kind = msg["type"]
        if kind == "metrics":
            rows = []
            for r in msg["rows"]:
                key = (r["sae"], r["kind"])
                if r["step"] > self.last.get(key, self.since_step):
                    self.last[key] = r["step"]
                    rows.append(r)
            if len(rows) == len(msg["rows"]):
                return msg if rows else None
            return {**msg, "rows": rows} if rows else None
        if kind == "checkpoint":
            if msg["id"] in self.checkpoints or msg["step"] <= self.since_step:
                return None
            self.checkpoints.add(msg["id"])
        elif kind == "status":
            if msg == self.status:
                return None
            self.status = msg
        return msg


async def _send_backlog(websocket: WebSocket, url: str, training_id: int, view: _RunView) -> None:
    cur = _Cursor(view.since_step)

    def chunk(first: bool) -> tuple[list[dict[str, Any]], bool]:
        with session_scope(url) as s:
            out: list[dict[str, Any]] = []
            if first:
                repo.get_training(s, training_id)  # NotFound before any message
            new, more = _new_metrics(s, training_id, cur)
            if new:
                out.append(_rows(new))
            if not more:
                out += _new_checkpoints(s, training_id, cur)
                out += _new_status(s, training_id, cur)
            return out, more

    first = more = True
    while more:
        messages, more = await run_in_threadpool(chunk, first)
        first = False
        for message in messages:
            if message["type"] == "checkpoint":
                view.checkpoints.add(message["id"])  # sent or not, never again
                kept = message if message["step"] > view.since_step else None
            else:
                kept = view.keep(message)
            if kept is not None:
                await websocket.send_json(kept)


async def _relay(
    websocket: WebSocket, sub: Subscription, keep: Callable[[dict[str, Any]], Any]
) -> None:
    """Send the feed's messages (those ``keep`` lets through) until the client goes away,
    the run is gone (error, then 1008) or the socket must reload (1013)."""

    async def receive() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
        sub.queue.put_nowait((_GONE, ""))

    receiver = asyncio.create_task(receive())
    try:
        while True:
            message, text = await sub.queue.get()
            if message is _GONE:
                return
            if message is RESYNC:
                await websocket.close(code=1013)
                return
            kept = keep(message)
            if kept is message:
                await websocket.send_text(text)  # serialised once for every socket
            elif kept is not None:
                await websocket.send_json(kept)
            if message["type"] == "error":
                await websocket.close(code=1008)
                return
    finally:
        receiver.cancel()


_GONE: dict[str, Any] = {"type": "_gone"}
"""The client closed the socket."""


def _hub(websocket: WebSocket) -> LiveHub:
    hub: LiveHub = websocket.app.state.live
    return hub


@router.websocket("/ws/trainings/{training_id}")
async def training_events(websocket: WebSocket, training_id: int, since_step: int = -1) -> None:
    """Backlog after ``since_step``, then live lines and status changes until the
    client goes away."""
    url: str = websocket.app.state.settings.db_url
    hub = _hub(websocket)
    await websocket.accept()
    view = _RunView(since_step)
    try:
        reader = lambda: RunReader(url, training_id, hub.pushes_metrics)  # noqa: E731
        async with hub.watch(("training", training_id), reader) as sub:
            try:
                await _send_backlog(websocket, url, training_id, view)
            except repo.NotFound as e:
                await websocket.send_json({"type": "error", "detail": str(e)})
                await websocket.close(code=1008)
                return
            await _relay(websocket, sub, view.keep)
    except ConnectionError:
        await websocket.close(code=1013)
    except WebSocketDisconnect:
        return


LIST_LIMIT = 500
"""Most recent jobs of each kind ``/ws/events`` watches."""


def _job(kind: str, row: Any) -> dict[str, Any]:
    out = {
        "type": kind,
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "control": row.control,
        "progress": row.progress,
        "error": row.error,
    }
    if kind == "training":
        out.update(
            step=row.step,
            total_steps=row.total_steps,
            eta_seconds=row.eta_seconds,
            latest_metrics=row.latest_metrics,  # the cards' live loss / L0 / FVU / dead
        )
    else:
        out.update(contexts=row.contexts, target_contexts=row.target_contexts, rows=row.rows)
    return out


def poll_jobs(url: str, known: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Changed, new and deleted jobs since the last call (``known`` is updated)."""
    with session_scope(url) as session:
        now = {
            ("training", r.id): _job("training", r)
            for r in repo.list_trainings(session, limit=LIST_LIMIT).items
        }
        now |= {
            ("activation_dataset", r.id): _job("activation_dataset", r)
            for r in repo.list_datasets(session, limit=LIST_LIMIT).items
        }
    out = [snap for key, snap in now.items() if known.get(key) != snap]
    out += [{"type": "deleted", "kind": kind, "id": i} for kind, i in known if (kind, i) not in now]
    known.clear()
    known.update(now)
    return out


class JobsReader:
    """The job lists' shared reader: every event of the deployment wakes it (Redis)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.known: dict[tuple[str, int], dict[str, Any]] = {}

    def prime(self) -> None:
        poll_jobs(self.url, self.known)

    def read(self) -> list[dict[str, Any]]:
        return poll_jobs(self.url, self.known)

    def on_event(self, event: dict[str, Any]) -> None:
        return None


@router.websocket("/ws/events")
async def job_events(websocket: WebSocket) -> None:
    """Every job on connect, then each change (status, progress, new, deleted): what a
    job list needs to stay current without polling the REST endpoints."""
    url: str = websocket.app.state.settings.db_url
    hub = _hub(websocket)
    await websocket.accept()
    try:
        async with hub.watch(("jobs",), lambda: JobsReader(url)) as sub:
            for message in await run_in_threadpool(poll_jobs, url, {}):
                await websocket.send_json(message)
            await _relay(websocket, sub, lambda m: m)
    except ConnectionError:
        await websocket.close(code=1013)
    except WebSocketDisconnect:
        return
