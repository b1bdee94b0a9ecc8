"""Job life on real databases (SQLite and PostgreSQL): user control requests follow
the state machine, claims are exclusive, heartbeats carry requests and ownership, and
runs whose worker died are found and re-queued exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from store_helpers import new_run

from saestudio.store import repo
from saestudio.store.db import session_scope
from saestudio.store.models import Training, utcnow

pytestmark = pytest.mark.integration


def test_control_requests_follow_the_state_machine(db_url: str) -> None:
    assert repo.can_transition("running", "paused")
    assert not repo.can_transition("completed", "running")
    assert not repo.can_transition("paused", "completed")
    with session_scope(db_url) as s:
        tid = new_run(s)
        out = repo.request_control(s, tid, "pause")  # nothing runs yet: paused at once
        assert (out.row.status, out.enqueue) == ("paused", False)
        with pytest.raises(repo.InvalidTransition, match="no checkpoint"):
            repo.request_control(s, tid, "stop_and_finalize")
        out = repo.request_control(s, tid, "resume")
        assert (out.row.status, out.enqueue) == ("queued", True)
        assert repo.claim(s, tid, "w1") is not None
        out = repo.request_control(s, tid, "pause")  # a request the worker honours
        assert (out.row.status, out.row.control, out.enqueue) == ("running", "pause", False)
        assert repo.request_control(s, tid, "pause").row.control == "pause"  # twice: fine
        assert repo.request_control(s, tid, "resume").row.control is None  # withdrawn
        with pytest.raises(repo.InvalidTransition, match="running"):
            repo.request_control(s, tid, "resume")
        repo.request_control(s, tid, "stop_and_finalize")
        with pytest.raises(repo.InvalidTransition, match="stop_and_finalize requested"):
            repo.request_control(s, tid, "pause")
        done = repo.set_status(s, tid, "completed", worker="w1", step=100, total_steps=100)
        assert (done.control, done.progress, done.finished_at is not None) == (None, 1.0, True)
        for action in ("pause", "resume", "stop", "stop_and_finalize"):
            with pytest.raises(repo.InvalidTransition, match="completed") as err:
                repo.request_control(s, tid, action)
            assert err.value.current == "completed"
        with pytest.raises(repo.InvalidTransition, match="cannot become running"):
            repo.set_status(s, tid, "running")
        with pytest.raises(ValueError, match="action"):
            repo.request_control(s, tid, "explode")
        with pytest.raises(repo.NotFound):
            repo.request_control(s, 10**9, "pause")


def test_stop_and_finalize_a_paused_run_requeues_it_with_the_request(db_url: str) -> None:
    with session_scope(db_url) as s:
        tid = new_run(s)
        repo.claim(s, tid, "w1")
        repo.add_checkpoint(s, tid, sae="sae", step=50, path="runs/x/checkpoints/step_50")
        repo.request_control(s, tid, "pause")
        paused = repo.set_status(s, tid, "paused", worker="w1", step=50)
        assert (paused.control, paused.step, paused.progress) == (None, 50, 0.5)
        out = repo.request_control(s, tid, "stop_and_finalize")
        assert (out.row.status, out.row.control, out.enqueue) == (
            "queued",
            "stop_and_finalize",
            True,
        )
        stopped = repo.request_control(s, tid, "stop")  # a stop on a queued run: at once
        assert (stopped.row.status, stopped.row.control) == ("cancelled", None)


def test_claim_is_exclusive_and_heartbeats_report_control(db_url: str) -> None:
    with session_scope(db_url) as s:
        tid = new_run(s)
        first = repo.claim(s, tid, "w1", task_id="t1")
        assert first is not None and (first.status, first.worker, first.attempts) == (
            "running",
            "w1",
            1,
        )
        assert repo.claim(s, tid, "w2") is None  # a duplicate delivery is dropped
        assert repo.claim(s, tid, "w2", stale_after_s=60) is None  # w1 is alive
        beat = repo.heartbeat(s, tid, "w1", step=25, latest_metrics={"loss": 0.5}, eta_seconds=9)
        assert beat == repo.Heartbeat(True, None)
        row = repo.get_training(s, tid)
        assert (row.step, row.progress, row.latest_metrics) == (25, 0.25, {"loss": 0.5})
        repo.request_control(s, tid, "stop")
        assert repo.heartbeat(s, tid, "w1") == repo.Heartbeat(True, "stop")
        assert repo.heartbeat(s, tid, "w2").owned is False
        with pytest.raises(repo.InvalidTransition, match="w1"):
            repo.set_status(s, tid, "cancelled", worker="w2")
        assert repo.set_status(s, tid, "cancelled", worker="w1").status == "cancelled"
        assert repo.set_status(s, tid, "cancelled").status == "cancelled"  # re-reported
        assert repo.heartbeat(s, tid, "w1").owned is False


def test_stale_running_runs_are_found_and_requeued_once(db_url: str) -> None:
    with session_scope(db_url) as s:
        dead, alive, queued = new_run(s, "dead"), new_run(s, "alive"), new_run(s, "queued")
        repo.claim(s, dead, "w-dead")
        repo.claim(s, alive, "w-alive")
        old = utcnow() - timedelta(minutes=10)
        s.execute(update(Training).where(Training.id == dead).values(heartbeat_at=old))
    with session_scope(db_url) as s:
        assert [r.id for r in repo.stale_running(s, 60)] == [dead]
        assert queued not in [r.id for r in repo.stale_running(s, 0)]
        # a redelivered task may take over the dead worker's run directly
        taken = repo.claim(s, dead, "w-new", stale_after_s=60)
        assert taken is not None and (taken.worker, taken.attempts) == ("w-new", 2)
        assert repo.heartbeat(s, dead, "w-dead").owned is False
        s.execute(update(Training).where(Training.id == dead).values(heartbeat_at=old))
    with session_scope(db_url) as s:
        moved = repo.requeue_stale(s, 60)
        assert [(r.id, r.status, r.worker) for r in moved] == [(dead, "queued", None)]
        assert "w-new" in (moved[0].error or "")
        assert repo.requeue_stale(s, 60) == []  # a second watchdog finds nothing to move
