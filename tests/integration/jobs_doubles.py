"""Test doubles of the DB layer for the job tests (the DB store is written separately).

- :class:`MemoryStore`: a RunStore / ExtractionStore in memory, recording every call.
- :class:`JsonFileStore`: a JobStore in one JSON file, shared by the test and the real
  worker processes it starts (``--include jobs_doubles`` with ``JOBS_TEST_STORE`` set
  makes the worker's tasks use it).

Both merge metric lines into one row per (sae, step), as the database's unique key does,
and count a *duplicate* whenever a line brings a field its row already has — what a
resumed job re-sending old lines would do.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENDED = ("paused", "cancelled", "completed", "failed")
IGNORED = ("sae", "step", "time")  # every line of a step carries these: no duplicate


def merge_row(row: dict[str, Any], line: dict[str, Any]) -> int:
    """Merge ``line`` into ``row``; the number of fields it already had."""
    dup = sum(1 for k in line if k not in IGNORED and k in row)
    row.update(line)
    return dup


class MemoryStore:
    """RunStore + ExtractionStore in memory. ``control(store, job_id)`` decides what
    ``get_control`` answers (after counting the poll in ``polls``)."""

    def __init__(
        self,
        control: Callable[[MemoryStore, int], str | None] | None = None,
        owned_beats: int | None = None,
    ):
        """``owned_beats``: heartbeats answered "yours" before the job counts as taken
        over by another worker (None: always yours)."""
        self.control_fn = control
        self.owned_beats = owned_beats
        self.lock = threading.Lock()
        self.statuses: list[tuple[int, str, dict[str, Any]]] = []
        self.rows: dict[int, dict[tuple[str, int], dict[str, Any]]] = {}
        self.checkpoints: dict[int, dict[tuple[str, int], dict[str, Any]]] = {}
        self.polls: Counter[int] = Counter()
        self.heartbeats: Counter[int] = Counter()
        self.metric_calls = 0
        self.lines_in = 0
        self.duplicates = 0
        self.pending: dict[int, str | None] = {}
        self.progress: dict[int, dict[str, Any]] = {}

    def status(self, job_id: int) -> str | None:
        found = [s for j, s, _ in self.statuses if j == job_id]
        return found[-1] if found else None

    def get_control(self, job_id: int) -> str | None:
        with self.lock:
            self.polls[job_id] += 1
            if self.control_fn is not None and self.pending.get(job_id) is None:
                self.pending[job_id] = self.control_fn(self, job_id)
            return self.pending.get(job_id)

    def set_status(self, job_id: int, status: str, **fields: Any) -> None:
        json.dumps(fields)  # the DB stores them as JSON
        with self.lock:
            self.statuses.append((job_id, status, fields))
            if status in ENDED:
                self.pending[job_id] = None
                self.control_fn = None

    def add_metrics(self, job_id: int, lines: list[dict[str, Any]]) -> None:
        json.dumps(lines)
        with self.lock:
            self.metric_calls += 1
            self.lines_in += len(lines)
            rows = self.rows.setdefault(job_id, {})
            for line in lines:
                key = (line["sae"], line["step"])
                self.duplicates += merge_row(rows.setdefault(key, {}), line)

    def add_checkpoint(
        self, job_id: int, sae: str, step: int, path: str, is_best: bool, eval_loss: float | None
    ) -> None:
        with self.lock:
            self.checkpoints.setdefault(job_id, {})[(sae, step)] = {
                "path": path,
                "is_best": is_best,
                "eval_loss": eval_loss,
            }

    def delete_metrics_after(self, job_id: int, step: int) -> None:
        with self.lock:
            rows = self.rows.get(job_id, {})
            for key in [k for k in rows if k[1] > step]:
                del rows[key]

    def heartbeat(self, job_id: int, hostname: str, **progress: Any) -> bool:
        json.dumps(progress)
        with self.lock:
            self.heartbeats[job_id] += 1
            self.progress[job_id] = progress
            return self.owned_beats is None or self.heartbeats[job_id] <= self.owned_beats


# ---- a JobStore in a JSON file, for real worker processes --------------------------------


class JsonFileStore:
    """Tables ``trainings`` and ``datasets``: id → {status, fields, control, heartbeat,
    hostname, config, run_dir, rows, duplicates, checkpoints, history}."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.trainings = _Table(self, "trainings")
        self.datasets = _Table(self, "datasets")

    @contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under an exclusive lock (processes and threads alike)."""
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.read()
            yield data
            tmp = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"trainings": {}, "datasets": {}}
        return json.loads(self.path.read_text())

    def job(self, table: str, job_id: int) -> dict[str, Any]:
        return self.read()[table][str(job_id)]

    def add_training(self, training_id: int, config: dict[str, Any], run_dir: Path) -> None:
        with self.edit() as d:
            d["trainings"][str(training_id)] = {
                "status": "queued", "fields": {}, "control": None, "heartbeat": 0.0,
                "hostname": None, "config": config, "run_dir": str(run_dir), "rows": {},
                "duplicates": 0, "checkpoints": {}, "history": [],
            }  # fmt: skip

    # JobStore
    def training_job(self, training_id: int) -> tuple[Any, Path] | None:
        from saestudio.training.config import TrainConfig

        job = self.read()["trainings"].get(str(training_id))
        if job is None:
            return None
        return TrainConfig.model_validate(job["config"]), Path(job["run_dir"])

    def dataset_gate(self, training_id: int) -> tuple[str, str | None]:
        return "ready", None  # jobs here carry no dataset row

    def extraction_job(self, dataset_id: int) -> Any:
        from saestudio.activations.extract import ExtractConfig

        job = self.read()["datasets"].get(str(dataset_id))
        return None if job is None else ExtractConfig.model_validate(job["config"])

    def inspection_job(self, inspection_id: int) -> None:
        return None  # this double queues no inspections (test_inspection_job.py covers them)

    def queue_inspection(self, training_id: int, rows: int) -> None:
        return None

    def claim(self, kind: str, job_id: int, hostname: str, stale_after_s: float) -> bool:
        table = "trainings" if kind == "training" else "datasets"
        with self.edit() as d:
            job = d[table].get(str(job_id))
            stale = job is not None and time.time() - job["heartbeat"] > stale_after_s
            if job is None or not (
                job["status"] == "queued" or (job["status"] == "running" and stale)
            ):
                return False
            job.update(status="running", hostname=hostname, heartbeat=time.time())
            job["history"].append(["claimed", hostname])
            return True

    def claim_stale(self, stale_after_s: float) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        with self.edit() as d:
            for table, kind in (("trainings", "training"), ("datasets", "extraction")):
                for job_id, job in d[table].items():
                    if (
                        job["status"] == "running"
                        and time.time() - job["heartbeat"] > stale_after_s
                    ):
                        job["status"] = "queued"
                        job["history"].append(["requeued", None])
                        found.append((kind, int(job_id)))
        return found


class _Table:
    """RunStore / ExtractionStore over one table of a :class:`JsonFileStore`."""

    def __init__(self, store: JsonFileStore, table: str):
        self.store, self.table = store, table

    @contextmanager
    def _job(self, job_id: int) -> Iterator[dict[str, Any]]:
        with self.store.edit() as d:
            yield d[self.table][str(job_id)]

    def get_control(self, job_id: int) -> str | None:
        return self.store.job(self.table, job_id)["control"]

    def set_status(self, job_id: int, status: str, **fields: Any) -> None:
        with self._job(job_id) as job:
            job["status"] = status
            job["fields"] = fields
            job["history"].append([status, fields.get("step")])
            if status in ENDED:
                job["control"] = None

    def add_metrics(self, job_id: int, lines: list[dict[str, Any]]) -> None:
        with self._job(job_id) as job:
            for line in lines:
                row = job["rows"].setdefault(f"{line['sae']}|{line['step']}", {})
                job["duplicates"] += merge_row(row, line)

    def add_checkpoint(
        self, job_id: int, sae: str, step: int, path: str, is_best: bool, eval_loss: float | None
    ) -> None:
        with self._job(job_id) as job:
            job["checkpoints"][f"{sae}|{step}"] = {"path": path, "is_best": is_best}

    def delete_metrics_after(self, job_id: int, step: int) -> None:
        with self._job(job_id) as job:
            job["rows"] = {k: v for k, v in job["rows"].items() if v["step"] <= step}

    def heartbeat(self, job_id: int, hostname: str, **progress: Any) -> bool:
        with self._job(job_id) as job:
            if job["status"] != "running" or job["hostname"] != hostname:
                return False  # re-queued or claimed by another worker: not ours any more
            job["heartbeat"] = time.time()
            job["progress"] = progress
            return True


if os.environ.get("JOBS_TEST_STORE"):  # imported by a worker started with --include
    from saestudio.jobs import tasks

    _shared = JsonFileStore(Path(os.environ["JOBS_TEST_STORE"]))
    tasks.set_store_factory(lambda: _shared)  # type: ignore[arg-type, return-value]
