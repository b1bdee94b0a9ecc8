"""The team deployment of the README, command for command (issue 7, "Done means" 2):
PostgreSQL + Redis, ``saestudio serve --no-worker`` and two ``saestudio worker``
processes sharing one data dir. Four trainings posted over HTTP spread across both
workers and complete — one of them a ``num_devices: 2`` torchrun job. A worker killed
with SIGKILL mid-run loses its run to the other worker's watchdog, which resumes it from
the last checkpoint (not from the start) to the same SAE as an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saestudio.activations.synthetic import make_ground_truth
from saestudio.training import TrainConfig, train

pytestmark = pytest.mark.integration

REDIS_DB = 9
CLI = [sys.executable, "-m", "saestudio.cli"]
CONFIG: dict[str, Any] = {
    "activations": "acts.npy",  # inside the shared data dir
    "sae": {"architecture": "topk", "k": 4, "d_sae": 128},
    "steps": 600,
    "batch_size": 64,
    "log_every": 20,
    "eval_every": 100,
    "density_every": 100,
    "checkpoint_every": 50,
    "keep_checkpoints": 20,
    "shuffle_buffer_rows": 1024,
    "shuffle_block_rows": 128,
    "device": "cpu",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    def __init__(self, env: dict[str, str], data: Path, url: str):
        self.env, self.data, self.url = env, data, url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.data / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [*CLI, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        return self.procs[name]

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
            for p in sorted(self.data.glob("*.log"))
        )

    def wait(self, check: Any, timeout: float, what: str) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = check()
            if found:
                return found
            time.sleep(0.2)
        pytest.fail(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")


@pytest.fixture
def team(db_url: str, tmp_path: Path) -> Iterator[Deployment]:
    if db_url.startswith("sqlite"):
        pytest.skip("the team deployment runs on PostgreSQL")
    import redis

    broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    data = tmp_path / "shared"
    data.mkdir()
    np.save(data / "acts.npy", make_ground_truth(4000, d=16, n_features=48, active=3, seed=1).x)
    port = _free_port()
    env = {
        **os.environ,
        # the README's three variables ...
        "SAESTUDIO_DATABASE_URL": db_url,
        "SAESTUDIO_BROKER_URL": broker,
        "SAESTUDIO_DATA_DIR": str(data),
        # ... and, for a test, a private queue and a watchdog that acts within seconds
        "SAESTUDIO_QUEUE": f"team-{uuid.uuid4().hex[:8]}",
        "SAESTUDIO_PORT": str(port),
        "SAESTUDIO_JOB_HEARTBEAT_S": "0.3",
        "SAESTUDIO_JOB_STALE_AFTER_S": "3",
        "SAESTUDIO_JOB_WATCHDOG_EVERY_S": "0.5",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("SAESTUDIO_API_TOKEN", None)
    dep = Deployment(env, data, f"http://127.0.0.1:{port}/api/v1")
    try:
        yield dep
    finally:
        for proc in dep.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_two_workers_four_trainings_and_a_killed_worker(team: Deployment, tmp_path: Path) -> None:
    team.start("api", ["serve", "--no-worker"])
    workers = {name: team.start(name, ["worker", "--name", name]) for name in ("w1", "w2")}

    def health() -> bool:
        try:
            return httpx.get(team.url + "/health").status_code == 200
        except httpx.HTTPError:
            return False

    team.wait(health, 30, "the API")
    http = httpx.Client(base_url=team.url, timeout=10)
    configs = [CONFIG, CONFIG, {**CONFIG, "num_devices": 2}, CONFIG]
    ids = []
    for i, cfg in enumerate(configs):
        r = http.post("/trainings", json={"name": f"team {i}", "config": cfg})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])

    def get(tid: int) -> dict[str, Any]:
        return dict(http.get(f"/trainings/{tid}").json())

    def spread_and_checkpointed() -> dict[str, Any] | None:
        running = [r for r in map(get, ids) if r["status"] == "running"]
        if len({r["worker"] for r in running}) < 2:  # both workers busy at once
            return None
        for run in running:
            if run["step"] < 450 and http.get(f"/trainings/{run['id']}/checkpoints").json():
                return run
        return None

    # trainings run on both workers; one has written a checkpoint: kill its worker mid-run
    victim = team.wait(spread_and_checkpointed, 60, "runs on both workers, one checkpointed")
    name = victim["worker"].split("@")[0]
    workers[name].send_signal(signal.SIGKILL)
    workers[name].wait()
    killed = time.time()
    out = team.data / victim["out_dir"]
    before = {d.name: d.stat().st_mtime for d in (out / "checkpoints").glob("step_*")}
    assert before, "the victim's checkpoint is on the shared disk"

    def all_ended() -> list[dict[str, Any]] | None:
        runs = [get(tid) for tid in ids]
        return runs if all(r["status"] in ("completed", "failed") for r in runs) else None

    runs = team.wait(all_ended, 75, "all four trainings to end")
    assert [r["status"] for r in runs] == ["completed"] * 4, [
        (r["status"], r["error"]) for r in runs
    ]
    assert all(r["step"] == 600 for r in runs)
    # the survivor took over the victim's run (a second attempt) and finished it
    survivor = next(n for n in workers if n != name)
    resumed = next(r for r in runs if r["id"] == victim["id"])
    assert resumed["worker"].split("@")[0] == survivor and resumed["attempts"] == 2
    # resumed, not restarted: the checkpoints written before the kill are untouched
    after = {d.name: d.stat().st_mtime for d in (out / "checkpoints").glob("step_*")}
    assert all(after[k] == v for k, v in before.items() if k in after)
    assert any(v > killed for v in after.values())
    # and the result is the uninterrupted run's SAE
    ref = tmp_path / "ref"
    train(
        TrainConfig.model_validate(
            {**CONFIG, "activations": str(team.data / "acts.npy"), "out": str(ref)}
        )
    )
    want = load_file(ref / "sae_weights.safetensors")
    for run in runs:
        got = load_file(team.data / run["out_dir"] / "sae_weights.safetensors")
        for key in want:
            torch.testing.assert_close(got[key], want[key], msg=f"run {run['id']}: {key}")
    rows = http.get(f"/trainings/{victim['id']}/metrics", params={"kind": "train"}).json()
    assert [row["step"] for row in rows] == list(range(20, 601, 20))
    assert (team.data / runs[2]["out_dir"] / "torchrun.log").is_file()  # the num_devices job
