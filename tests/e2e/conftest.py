"""The browser suite's fixtures: a real `saestudio serve` (API + embedded Celery worker,
SQLite, SQLite broker) on a free port with an empty data dir, and Debian's chromium
driven by Playwright."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

CHROMIUM = os.environ.get("SAESTUDIO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WEB_INDEX = Path(__file__).resolve().parents[2] / "saestudio" / "web" / "index.html"
SHOTS = Path(
    os.environ.get(
        "SAESTUDIO_SCREENSHOTS", Path(__file__).resolve().parents[2] / "build" / "screenshots"
    )
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(
    tmp: Path, args: tuple[str, ...] = (), env_extra: dict[str, str] | None = None
) -> Iterator[str]:
    """Run `saestudio serve` on a free port with an empty data dir under ``tmp``; yield its
    base URL (127.0.0.1); stop it, worker included, afterwards."""
    if not WEB_INDEX.is_file():
        pytest.fail("the web bundle is not built: run `make web` (make test does)")
    port = _free_port()
    env = {**os.environ, "SAESTUDIO_DATA_DIR": str(tmp / "data"), "HF_HUB_OFFLINE": "1"}
    env.pop("SAESTUDIO_DATABASE_URL", None)
    env.pop("SAESTUDIO_BROKER_URL", None)
    env.update(env_extra or {})
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "saestudio.cli", "serve", "--port", str(port), *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while True:
        try:  # up: health answers (401 where a token is required)
            if httpx.get(base + "/api/v1/health", timeout=2).status_code in (200, 401):
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > end or proc.poll() is not None:
            raise AssertionError((tmp / "serve.log").read_text()[-3000:])
        time.sleep(0.3)
    try:
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        worker_log = tmp / "data" / "logs" / "worker.log"
        if worker_log.exists():
            print(worker_log.read_text()[-4000:])


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a fresh studio with its embedded worker."""
    with serve(tmp_path_factory.mktemp("studio")) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
