"""Live-event load (issue 15 item 4): many WebSocket clients watching one training.

PostgreSQL (a fresh database, dropped at the end) + Redis (db 13) + a real
``saestudio worker`` training a small TopK SAE (at nice 10: in a team it runs on another
machine) + the API under uvicorn in its own process. For each client count (20, then 200) the clients connect to
``/ws/trainings/{id}``, and over a window of ``--window`` seconds we record

- the delay of every live metrics message: ``published_at`` (the worker's clock when it
  published the event) to the client's receipt (same machine, same clock); and of every
  metric line from its ``time`` (the trainer's clock when it logged the line: this adds
  the worker's write batching, ``SAESTUDIO_JOB_FLUSH_S``) to receipt, the one figure
  the embedded design (no events) has too;
- the API process's SQL statements per second (a SQLAlchemy ``before_cursor_execute``
  listener on every engine in the API process, written to a file every 0.1 s), and the
  bench database's transactions per second in ``pg_stat_database`` (API + worker).

Loopback only; every wait is bounded; it stops the training, the worker and the API and
drops its database by itself. ``--broker sqlite`` runs the embedded design (kombu's
SQLite broker, no events: one shared DB poll per run) on the same PostgreSQL database;
``--api-tree DIR`` runs the API from another checkout (e.g. main, for a before/after).

    PYTHONPATH=$PWD python bench/ws_load.py              # Redis, 20 and 200 clients
    PYTHONPATH=$PWD python bench/ws_load.py --broker sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

PG_ADMIN = os.environ.get("SAESTUDIO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SAESTUDIO_BENCH_REDIS", "redis://127.0.0.1:6379/13")
CONFIG: dict[str, Any] = {
    "activations": "acts.npy",
    "sae": {"architecture": "topk", "k": 4, "d_sae": 64},
    "steps": 1_000_000,  # longer than the bench: it is stopped at the end
    "batch_size": 64,
    "log_every": 5,
    "eval_every": 500,
    "density_every": 500,
    "checkpoint_every": 5000,
    "keep_checkpoints": 1,
    "shuffle_buffer_rows": 1024,
    "shuffle_block_rows": 128,
    "device": "cpu",
}


def serve(port: int, count_file: Path) -> None:
    """The API process: uvicorn on ``port``, counting every SQL statement it runs."""
    import uvicorn
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from saestudio.api.app import create_app

    count = [0]
    lock = threading.Lock()

    def on_execute(*_: Any) -> None:
        with lock:
            count[0] += 1

    event.listen(Engine, "before_cursor_execute", on_execute)

    def dump() -> None:
        tmp = count_file.with_suffix(".tmp")
        while True:
            tmp.write_text(f"{time.time()} {count[0]}")
            os.replace(tmp, count_file)
            time.sleep(0.1)

    threading.Thread(target=dump, daemon=True).start()
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def _xacts(db: str) -> int:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (db,)
        ).fetchone()
    return int(row[0]) if row else 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _api_count(count_file: Path) -> int:
    return int(count_file.read_text().split()[1])


def _wait(check: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            found = check()
        except (httpx.HTTPError, OSError, ValueError, IndexError):
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise TimeoutError(what)


async def phase(
    ws_base: str,
    tid: int,
    since: int,
    n: int,
    window: float,
    count_file: Path,
    db: str,
    compression: str | None,
    pids: dict[str, int],
) -> dict[str, Any]:
    """``n`` clients watching run ``tid``: latencies and query rates over ``window``."""
    from websockets.asyncio.client import connect

    measuring = False
    delays: list[float] = []
    logged: list[float] = []
    received = [0] * n
    ready = [asyncio.Event() for _ in range(n)]
    errors: list[str] = []

    sockets: list[Any] = []

    async def client(i: int) -> None:
        url = f"{ws_base}/ws/trainings/{tid}?since_step={since}"
        try:
            async with connect(url, open_timeout=60, max_queue=None, compression=compression) as ws:
                sockets.append(ws)
                async for raw in ws:  # ends when the bench closes the socket
                    now = time.time()
                    msg = json.loads(raw)
                    if msg["type"] == "status":
                        ready[i].set()
                    elif measuring and msg["type"] == "metrics":
                        received[i] += 1
                        if msg.get("published_at"):  # Redis events only
                            delays.append(now - msg["published_at"])
                        logged.extend(now - r["metrics"]["time"] for r in msg["rows"])
        except Exception as e:  # any failure is a finding
            errors.append(f"client {i}: {type(e).__name__}: {e}")
            ready[i].set()

    tasks = []
    t_connect = time.monotonic()
    for i in range(n):  # the browsers arrive over a moment, not in one instant
        tasks.append(asyncio.create_task(client(i)))
        if i % 20 == 19:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 120)
    connected_s = time.monotonic() - t_connect
    await asyncio.sleep(2.0)  # the backlog reads of the last connects are done

    cpu0 = {name: _cpu_s(pid) for name, pid in pids.items()}
    q0, x0, t0 = _api_count(count_file), _xacts(db), time.monotonic()
    measuring = True
    await asyncio.sleep(window)
    measuring = False
    q1, x1, t1 = _api_count(count_file), _xacts(db), time.monotonic()
    cpu = {
        f"{name}_cpu_pct": round(100 * (_cpu_s(pid) - cpu0[name]) / (t1 - t0))
        for name, pid in pids.items()
    }
    await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets)), 30)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)) * 1000, 1) if values else None

    return {
        "clients": n,
        "connect_s": round(connected_s, 2),
        "window_s": round(t1 - t0, 2),
        "api_statements_per_s": round((q1 - q0) / (t1 - t0), 2),
        "pg_xacts_per_s": round((x1 - x0) / (t1 - t0), 2),
        "messages": sum(received),
        "clients_without_messages": sum(1 for r in received if r == 0),
        "publish_to_client_p50_ms": pct(delays, 50),
        "publish_to_client_p99_ms": pct(delays, 99),
        "publish_to_client_max_ms": pct(delays, 100),
        "logged_to_client_p50_ms": pct(logged, 50),
        "logged_to_client_p99_ms": pct(logged, 99),
        **cpu,
        "errors": errors[:5],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[20, 200])
    p.add_argument("--window", type=float, default=15.0, help="seconds measured per count")
    p.add_argument("--broker", choices=["redis", "sqlite"], default="redis")
    p.add_argument("--api-tree", type=Path, help="run the API from this checkout")
    p.add_argument("--no-deflate", action="store_true", help="clients refuse permessage-deflate")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the API process
    p.add_argument("--count-file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.count_file)
        return 0

    db = f"saestudio_wsload_{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="wsload-"))
    data = tmp / "data"
    data.mkdir()
    from saestudio.activations.synthetic import make_ground_truth

    np.save(data / "acts.npy", make_ground_truth(20_000, d=16, n_features=48, active=3).x)
    _admin(f'CREATE DATABASE "{db}"')
    env = {
        **os.environ,
        "SAESTUDIO_DATA_DIR": str(data),
        "SAESTUDIO_DATABASE_URL": PG_ADMIN.rsplit("/", 1)[0].replace(
            "postgresql://", "postgresql+psycopg://"
        )
        + f"/{db}",
        "SAESTUDIO_QUEUE": f"wsload-{os.getpid()}",
        "OMP_NUM_THREADS": "1",
    }
    if args.broker == "redis":
        env["SAESTUDIO_BROKER_URL"] = REDIS_URL
    port, count_file = _free_port(), tmp / "api_statements"
    api_env = dict(env)
    if args.api_tree:
        api_env["PYTHONPATH"] = str(args.api_tree.resolve())
    procs: dict[str, subprocess.Popen[bytes]] = {}
    results: list[dict[str, Any]] = []
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        with (tmp / "api.log").open("ab") as log:
            procs["api"] = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(port), "--count-file", str(count_file)],
                env=api_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait(lambda: httpx.get(f"{base}/health").json()["db"], 60, "the API")
        with (tmp / "worker.log").open("ab") as log:
            # nice 10: the worker stands in for a training box elsewhere; here its full
            # core of training would compete with the API and the clients it measures
            procs["worker"] = subprocess.Popen(
                ["nice", "-n", "10", sys.executable, "-m", "saestudio.cli", "worker"]
                + ["--name", "wsload"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        body = {"name": "wsload", "config": CONFIG}
        tid = httpx.post(f"{base}/trainings", json=body, timeout=30).json()["id"]
        run = lambda: httpx.get(f"{base}/trainings/{tid}").json()  # noqa: E731
        _wait(lambda: run()["status"] == "running" and run()["step"] > 0, 120, "the training")
        for n in args.clients:
            since = int(run()["step"])
            found = asyncio.run(
                phase(
                    f"ws://127.0.0.1:{port}/api/v1",
                    tid,
                    since,
                    n,
                    args.window,
                    count_file,
                    db,
                    None if args.no_deflate else "deflate",
                    {"api": procs["api"].pid, "clients": os.getpid()},
                )
            )
            found["run_step"] = int(run()["step"])
            print(json.dumps(found), flush=True)
            results.append(found)
        httpx.post(f"{base}/trainings/{tid}/control", json={"action": "stop"}, timeout=30)
        _wait(lambda: run()["status"] in ("cancelled", "completed"), 60, "the stop")
    finally:
        for name in ("worker", "api"):
            proc = procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if args.broker == "redis":  # the queue's bindings that kombu leaves behind
            import redis

            queue = env["SAESTUDIO_QUEUE"]
            redis.Redis.from_url(REDIS_URL).delete(
                f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"
            )
        try:
            _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        except Exception as e:  # report, but keep the figures
            print(f"database {db} not dropped: {e}", file=sys.stderr)
        shutil.rmtree(data, ignore_errors=True)  # the logs stay, for a look
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"logs: {tmp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
