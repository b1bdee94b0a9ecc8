"""The WebSockets: a run's backlog then live metric, status and checkpoint messages
within a second; the job-list event stream; an unknown run. SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest
from api_helpers import API
from fastapi.testclient import TestClient
from store_helpers import new_run, train_line

from saestudio.settings import Settings
from saestudio.store import repo
from saestudio.store.db import session_scope

pytestmark = pytest.mark.integration


# ---- websocket -------------------------------------------------------------------------------


def test_websocket_backlog_then_live(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.db_url) as s:
        tid = new_run(s)
        repo.add_metrics(s, tid, [train_line(step) for step in (1, 2, 3)])
    with client.websocket_connect(f"{API}/ws/trainings/{tid}?since_step=1") as ws:
        got: dict[str, Any] = {}
        while "metrics" not in got or "status" not in got:
            msg = ws.receive_json()
            got[msg["type"]] = msg
        assert [r["step"] for r in got["metrics"]["rows"]] == [2, 3]
        assert got["status"]["status"] == "queued"

        t0 = time.monotonic()
        with session_scope(settings.db_url) as s:
            repo.add_metrics(s, tid, [train_line(4)])
        msg = ws.receive_json()
        assert msg["type"] == "metrics" and [r["step"] for r in msg["rows"]] == [4]
        assert time.monotonic() - t0 < 1.0

        with session_scope(settings.db_url) as s:
            repo.request_control(s, tid, "pause")
        msg = ws.receive_json()
        assert msg["type"] == "status" and msg["status"] == "paused"

        with session_scope(settings.db_url) as s:
            cid = repo.add_checkpoint(s, tid, sae="sae", step=4, path="runs/x/ck/4").id
        msg = ws.receive_json()
        assert msg["type"] == "checkpoint" and msg["id"] == cid and msg["step"] == 4


def test_websocket_job_events(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.db_url) as s:
        tid = new_run(s)
    with client.websocket_connect(f"{API}/ws/events") as ws:
        first = ws.receive_json()
        assert (first["type"], first["id"], first["status"]) == ("training", tid, "queued")
        client.post(f"{API}/trainings/{tid}/control", json={"action": "pause"})
        msg = ws.receive_json()
        assert (msg["id"], msg["status"]) == (tid, "paused")
        client.delete(f"{API}/trainings/{tid}")
        assert ws.receive_json() == {"type": "deleted", "kind": "training", "id": tid}


def test_websocket_unknown_run(client: TestClient) -> None:
    with client.websocket_connect(f"{API}/ws/trainings/999") as ws:
        assert ws.receive_json()["type"] == "error"
