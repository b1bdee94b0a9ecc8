"""What `make run` starts (issue 4 "Done means" 1): `saestudio serve --demo` — the API, a
local worker, SQLite and the SQLite broker, nothing else — extracts the packaged demo
dataset; a curl-style POST of a TopK training on it runs to `completed` and its SAELens
export downloads."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(fn, timeout: float, what: str):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_serve_demo_then_train_on_it(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "SAESTUDIO_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    env.pop("SAESTUDIO_DATABASE_URL", None)
    env.pop("SAESTUDIO_BROKER_URL", None)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "saestudio.cli", "serve", "--demo", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1"

    def get(path: str) -> httpx.Response | None:
        try:
            return httpx.get(base + path, timeout=5)
        except httpx.TransportError:
            return None

    try:
        _until(lambda: (r := get("/health")) is not None and r.status_code == 200, 60, "health")
        demo = _until(
            lambda: next(
                (
                    d
                    for d in get("/activation-datasets").json()["items"]
                    if d["name"] == "demo" and d["status"] in ("completed", "failed")
                ),
                None,
            ),
            180,
            "the demo extraction",
        )
        assert demo["status"] == "completed", demo
        config = {
            "activations": "activations/demo",
            "hook": "resid_post.3",
            "steps": 60,
            "batch_size": 512,
            "sae": {"architecture": "topk", "k": 16, "expansion_factor": 2},
        }
        r = httpx.post(base + "/trainings", json={"name": "demo topk", "config": config})
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        run = _until(
            lambda: (
                (x := get(f"/trainings/{tid}").json())["status"] in ("completed", "failed") and x
            ),
            180,
            "the training",
        )
        assert run["status"] == "completed", run
        rows = get(f"/trainings/{tid}/metrics").json()
        assert any("fvu" in row["metrics"] for row in rows)
        dl = get(f"/trainings/{tid}/sae/download")
        assert dl is not None and dl.status_code == 200
        assert any(
            n.endswith("sae_weights.safetensors")
            for n in zipfile.ZipFile(io.BytesIO(dl.content)).namelist()
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        print((tmp_path / "serve.log").read_text()[-3000:])
