"""Live progress: ``/ws/trainings/{id}?since_step=N`` for one run, ``/ws/events`` for
the job lists.

On connect: every metric line after ``since_step`` from the database (a reconnecting
client passes the last step it saw), then a poll every :data:`POLL_S` for new lines and
status / step changes. Polling the database works the same for the embedded SQLite
default and a shared PostgreSQL, and needs nothing else running. Redis pub/sub (the
worker publishes, the API relays) can replace the poll for teams later without changing
the messages.

Messages on ``/ws/trainings/{id}``: ``{"type": "metrics", "rows": [{step, sae, kind,
metrics}, ...]}``, ``{"type": "status", "status", "step", "total_steps", "progress",
"eta_seconds", "error", "control"}``, ``{"type": "checkpoint", "id", "sae", "step",
"is_best", "eval_loss"}``; ``{"type": "error", "detail"}`` then close for an unknown run.
On ``/ws/events``: ``{"type": "training" | "activation_dataset", "id", "name", "status",
"progress", ...}`` (trainings add step, total_steps, eta_seconds, latest_metrics; datasets
contexts, target_contexts, rows) for every job on connect and whenever one changes, and
``{"type": "deleted", "kind", "id"}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool

from saestudio.store import repo
from saestudio.store.db import session_scope

POLL_S = 0.25
BATCH = 5000
"""Most lines one poll reads (a long backlog arrives over a few messages)."""

router = APIRouter()


class _Cursor:
    """What the client has been sent: metric ids (lines at one step arrive per SAE and
    kind, possibly in different commits) and the last status snapshot."""

    def __init__(self, since_step: int) -> None:
        self.step = since_step + 1
        self.seen: set[int] = set()
        self.status: dict[str, Any] | None = None
        self.checkpoints: set[int] = set()
        self.since_step = since_step


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


def poll(url: str, training_id: int, cur: _Cursor) -> list[dict[str, Any]]:
    """The messages to send now (blocking DB reads: run in a thread)."""
    out: list[dict[str, Any]] = []
    with session_scope(url) as session:
        run = repo.get_training(session, training_id)
        lines = repo.metrics(session, training_id, start_step=cur.step, limit=BATCH)
        new = [m for m in lines if m.id not in cur.seen]
        if new:
            cur.seen.update(m.id for m in new)
            # keep re-reading the last step: another SAE / kind at it may still arrive
            cur.step = new[-1].step
            cur.seen = {m.id for m in lines if m.step >= cur.step}
            rows = [
                {"step": m.step, "sae": m.sae, "kind": m.kind, "metrics": m.metrics} for m in new
            ]
            out.append({"type": "metrics", "rows": rows})
        for c in repo.list_checkpoints(session, training_id):
            if c.id not in cur.checkpoints:
                cur.checkpoints.add(c.id)
                if c.step > cur.since_step:
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
        snap = _status(run)
        if snap != cur.status:
            cur.status = snap
            out.append(snap)
    return out


async def _pump(websocket: WebSocket, produce: Any, *args: Any) -> None:
    """Send what ``produce(*args)`` returns (in a thread: it reads the DB), every
    :data:`POLL_S`, until the client goes away."""
    while True:
        for message in await run_in_threadpool(produce, *args):
            await websocket.send_json(message)
        try:
            # doubles as the poll interval and notices a client that closed
            msg = await asyncio.wait_for(websocket.receive(), POLL_S)
        except TimeoutError:
            continue
        if msg["type"] == "websocket.disconnect":
            return


@router.websocket("/ws/trainings/{training_id}")
async def training_events(websocket: WebSocket, training_id: int, since_step: int = -1) -> None:
    """Backlog after ``since_step``, then live lines and status changes until the
    client goes away."""
    url: str = websocket.app.state.settings.db_url
    await websocket.accept()
    cur = _Cursor(since_step)
    try:
        await _pump(websocket, poll, url, training_id, cur)
    except repo.NotFound as e:
        await websocket.send_json({"type": "error", "detail": str(e)})
        await websocket.close(code=1008)
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


@router.websocket("/ws/events")
async def job_events(websocket: WebSocket) -> None:
    """Every job on connect, then each change (status, progress, new, deleted): what a
    job list needs to stay current without polling the REST endpoints."""
    url: str = websocket.app.state.settings.db_url
    await websocket.accept()
    try:
        await _pump(websocket, poll_jobs, url, {})
    except WebSocketDisconnect:
        return
