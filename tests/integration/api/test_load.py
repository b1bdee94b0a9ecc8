"""Load (issue 4 "Done means" 8): 50 concurrent clients — 25 polling the metrics
endpoint, 25 on the run's WebSocket — against a real uvicorn server while a real worker
trains. No errors; every WebSocket client receives the live metrics; p99 latency is
printed (and recorded in bench/RESULTS.md)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from websockets.sync.client import connect

from saestudio.activations.synthetic import make_ground_truth
from saestudio.api.app import create_app
from saestudio.jobs.embedded import start_worker, stop_worker
from saestudio.settings import Settings

CLIENTS = 50
DURATION_S = 8.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fifty_clients_during_a_training(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "acts.npy", make_ground_truth(8000, d=16, n_features=48, active=3).x)
    port = _free_port()
    settings = Settings(data_dir=data, port=port)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    worker = start_worker(settings, name="load")
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.1)
        config = {
            "activations": "acts.npy",
            "steps": 2000,
            "batch_size": 64,
            "log_every": 5,
            "sae": {"architecture": "topk", "k": 4, "d_sae": 64},
        }
        tid = httpx.post(f"{base}/trainings", json={"name": "load", "config": config}).json()["id"]
        while httpx.get(f"{base}/trainings/{tid}").json()["status"] != "running":
            time.sleep(0.2)

        latencies: list[float] = []
        errors: list[str] = []
        ws_messages = [0] * (CLIENTS // 2)
        lock = threading.Lock()
        stop_at = time.monotonic() + DURATION_S

        def poller() -> None:
            with httpx.Client(timeout=10) as client:
                while time.monotonic() < stop_at:
                    t0 = time.perf_counter()
                    r = client.get(f"{base}/trainings/{tid}/metrics", params={"kind": "train"})
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append(dt)
                        if r.status_code != 200:
                            errors.append(f"metrics {r.status_code}")

        def watcher(i: int) -> None:
            try:
                with connect(
                    f"ws://127.0.0.1:{port}/api/v1/ws/trainings/{tid}?since_step=0", open_timeout=10
                ) as ws:
                    while time.monotonic() < stop_at:
                        try:
                            msg = json.loads(ws.recv(timeout=1))
                        except TimeoutError:
                            continue
                        if msg.get("type") == "metrics":
                            ws_messages[i] += 1
            except Exception as e:  # any failure is a finding
                with lock:
                    errors.append(f"ws {type(e).__name__}: {e}")

        threads = [threading.Thread(target=poller) for _ in range(CLIENTS // 2)]
        threads += [threading.Thread(target=watcher, args=(i,)) for i in range(CLIENTS // 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=DURATION_S + 30)
        httpx.post(f"{base}/trainings/{tid}/control", json={"action": "stop"})
    finally:
        stop_worker(worker)
        server.should_exit = True
        thread.join(timeout=10)

    assert not errors, errors[:5]
    assert all(n > 0 for n in ws_messages), ws_messages
    lat = np.array(latencies)
    p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
    print(
        f"\n{len(lat)} metric reads by {CLIENTS // 2} clients + {CLIENTS // 2} WebSockets: "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    assert p99 < 5.0
