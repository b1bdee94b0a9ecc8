"""The job layer's runner reporting to the real database through ``SqlJobStore`` (on
SQLite and PostgreSQL): a run paused by a user request and resumed by another worker
completes with every metric line stored once and its checkpoints and export recorded."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from saestudio.jobs.events import MemoryEventSink
from saestudio.jobs.runner import JobTiming, run_training
from saestudio.store import repo
from saestudio.store.db import session_scope
from saestudio.store.jobstore import SqlJobStore
from saestudio.store.models import ActivationDataset, Training, utcnow
from saestudio.training import checkpoint as ckpt
from saestudio.training.config import TrainConfig

pytestmark = pytest.mark.integration

FAST = JobTiming(poll_s=0, flush_s=0.5, heartbeat_s=0.2)


def tiny(acts: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "activations": str(acts),
        "sae": {"architecture": "topk", "d_sae": 64, "k": 4},
        "steps": 60, "batch_size": 64, "log_every": 5, "eval_every": 20, "density_every": 30,
        "checkpoint_every": 20, "eval_tokens": 256, "shuffle_buffer_rows": 512,
        "shuffle_block_rows": 128, "out": "runs/job",
    }  # fmt: skip
    return TrainConfig.model_validate({**base, **kw})


def test_paused_then_resumed_run_is_recorded_once(
    db_url: str, small_acts: Path, tmp_path: Path
) -> None:
    store = SqlJobStore(db_url, tmp_path)
    with session_scope(db_url) as s:
        tid = repo.create_training(s, tiny(small_acts), name="job").id
    assert store.claim("training", tid, "w1", 60)
    assert not store.claim("training", tid, "w2", 60)
    with session_scope(db_url) as s:
        repo.request_control(s, tid, "pause")  # honoured at the job's first control poll
    job = store.training_job(tid)
    assert job is not None and job[1] == tmp_path / "runs/job"
    status = run_training(
        tid, job[0], job[1], store.trainings, MemoryEventSink(), hostname="w1", timing=FAST
    )
    assert status == "paused"
    with session_scope(db_url) as s:
        row = repo.get_training(s, tid)
        assert (row.status, row.control) == ("paused", None) and 0 < row.step < 60
        assert repo.request_control(s, tid, "resume").enqueue
    assert store.claim("training", tid, "w2", 60)
    status = run_training(
        tid, job[0], job[1], store.trainings, MemoryEventSink(), hostname="w2", timing=FAST
    )
    assert status == "completed"
    with session_scope(db_url) as s:
        row = repo.get_training(s, tid)
        assert (row.status, row.step, row.progress, row.worker) == ("completed", 60, 1.0, "w2")
        assert row.exports is not None and not Path(row.exports["sae"]).is_absolute()
        assert (tmp_path / row.exports["sae"] / "cfg.json").is_file()
        train = repo.metrics(s, tid, kind="train")
        assert [r.step for r in train] == list(range(5, 61, 5))  # each once, none lost
        assert {r.step for r in repo.metrics(s, tid, kind="density")} >= {30, 60}
        rows = repo.list_checkpoints(s, tid)
        steps = [c.step for c in rows]
        assert {40, 60} <= set(steps) and len(steps) == len(set(steps))
        # retention (best + last 2) pruned older folders; their rows went with them
        assert {tmp_path / c.path for c in rows} == set(
            (tmp_path / "runs/job/checkpoints").glob("step_*")
        )
        (best,) = repo.best_checkpoints(s, tid)
        assert best.size_bytes and (tmp_path / best.path).is_dir()
    # crash recovery: nothing is left running, so the watchdog finds nothing
    assert store.claim_stale(0.0) == []


def test_job_store_requeues_dead_jobs_once_and_loads_extractions(
    db_url: str, tmp_path: Path
) -> None:
    store = SqlJobStore(db_url, tmp_path)
    extract = {"model": "m", "dataset": "demo:pydoc", "hooks": ["resid_post.1"], "out": "x"}
    with session_scope(db_url) as s:
        tid = repo.create_training(s, tiny(tmp_path / "a.npy"), name="dead").id
        did = repo.create_dataset(s, extract, name="demo", path="activations/demo").id
    assert store.claim("training", tid, "w-dead", 60)
    assert store.claim("extraction", did, "w-dead", 60)
    old = utcnow() - timedelta(minutes=5)
    with session_scope(db_url) as s:
        s.execute(update(Training).values(heartbeat_at=old))
        s.execute(update(ActivationDataset).values(heartbeat_at=old))
    assert store.trainings.heartbeat(tid, "w-other") is False
    assert store.claim_stale(60) == [("training", tid), ("extraction", did)]
    assert store.claim_stale(60) == []  # another worker's watchdog: nothing left
    assert store.trainings.heartbeat(tid, "w-dead") is False  # the dead worker stops
    cfg = store.extraction_job(did)
    assert cfg is not None and cfg.out == str(tmp_path / "activations/demo")
    assert store.training_job(10**9) is None
    with pytest.raises(ValueError, match="outside the data dir"):
        store.trainings.add_checkpoint(tid, "sae", 1, "/elsewhere/step_1", False, None)


def test_store_lists_complete_checkpoints_only(
    db_url: str, small_acts: Path, tmp_path: Path
) -> None:
    """A paused run whose folder gained leftovers (a .tmp with state.json, a folder
    without it): the resumed job starts from the last complete checkpoint, and the store
    keeps rows only for complete folders."""
    store = SqlJobStore(db_url, tmp_path)
    with session_scope(db_url) as s:
        tid = repo.create_training(s, tiny(small_acts), name="job").id
    assert store.claim("training", tid, "w1", 60)
    with session_scope(db_url) as s:
        repo.request_control(s, tid, "pause")
    job = store.training_job(tid)
    assert job is not None
    run_training(
        tid, job[0], job[1], store.trainings, MemoryEventSink(), hostname="w1", timing=FAST
    )
    root = job[1] / "checkpoints"
    with session_scope(db_url) as s:
        paused = repo.get_training(s, tid).step
        repo.request_control(s, tid, "resume")
    last = ckpt.step_dir(root, paused)
    shutil.copytree(last, root / "step_00000059.tmp")
    (root / "step_00000058").mkdir()
    # a row for a folder that lost its state.json (a hand-copied run, a full disk)
    store.trainings.add_checkpoint(tid, "sae", 58, str(root / "step_00000058"), False, None)
    assert store.claim("training", tid, "w2", 60)
    status = run_training(
        tid, job[0], job[1], store.trainings, MemoryEventSink(), hostname="w2", timing=FAST
    )
    assert status == "completed"
    with session_scope(db_url) as s:
        rows = repo.list_checkpoints(s, tid)
        assert {tmp_path / c.path for c in rows} == set(ckpt.checkpoints(root).values())
        assert 58 not in {c.step for c in rows}
        train = repo.metrics(s, tid, kind="train")
        assert [r.step for r in train] == list(range(5, 61, 5))
    assert not (root / "step_00000059.tmp").exists() and not (root / "step_00000058").exists()
