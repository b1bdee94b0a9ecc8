"""The store on real databases (each test runs on SQLite and on PostgreSQL): migrations
match the models, metric batches are idempotent single statements, deletes cascade,
checkpoints, datasets and templates behave. Job life: ``test_store_lifecycle.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, inspect
from store_helpers import config, count, new_run, train_line

from saestudio.store import repo
from saestudio.store.db import BUSY_TIMEOUT_MS, get_engine, session_scope
from saestudio.store.migrate import current_revision, downgrade, head_revision, upgrade
from saestudio.store.models import TABLES, Base, Checkpoint, TrainingMetric

pytestmark = pytest.mark.integration


@contextmanager
def recorded(engine: Engine) -> Iterator[dict[str, list[Any]]]:
    """Commits and INSERTs into training_metrics seen on ``engine`` inside the block."""
    seen: dict[str, list[Any]] = {"commits": [], "inserts": []}

    def on_commit(conn: Any) -> None:
        seen["commits"].append(1)

    def on_execute(conn: Any, cur: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TRAINING_METRICS"):
            seen["inserts"].append(statement)

    event.listen(engine, "commit", on_commit)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "before_cursor_execute", on_execute)


# ---- migrations ---------------------------------------------------------------------------


def test_upgrade_head_then_downgrade_base(new_database: Callable[[], str]) -> None:
    url = new_database()
    assert current_revision(url) is None
    upgrade(url)
    engine = get_engine(url)
    assert set(inspect(engine).get_table_names()) == {*TABLES, "alembic_version"}
    assert current_revision(url) == head_revision()
    upgrade(url)  # a second start of the service finds nothing to do
    downgrade(url)
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set()
    assert current_revision(url) is None


def test_models_and_migrations_agree(migrated_url: str) -> None:
    with get_engine(migrated_url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_sqlite_connections_wal_busy_timeout_foreign_keys(db_url: str, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite pragmas")
    with get_engine(db_url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS


def test_concurrent_writers_wait_instead_of_failing(db_url: str) -> None:
    """The API and the worker write at once: the second writer waits, then succeeds."""
    holding = threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with session_scope(db_url) as s:
                repo.create_template(s, {}, name="slow")
                holding.set()
                time.sleep(0.3)  # holds SQLite's write lock until the commit
        except BaseException as e:
            errors.append(e)
            holding.set()

    t = threading.Thread(target=slow_writer)
    t.start()
    assert holding.wait(5)
    with session_scope(db_url) as s:
        repo.create_template(s, {}, name="fast")
    t.join()
    assert errors == []
    with session_scope(db_url) as s:
        assert repo.list_templates(s).total == 2


# ---- metrics ------------------------------------------------------------------------------


def test_add_metrics_is_idempotent_and_keeps_each_kind(db_url: str) -> None:
    with session_scope(db_url) as s:
        tid = new_run(s)
    lines = [
        train_line(10),
        {"step": 10, "sae": "sae", "feature_density": {"edges": [-10, 0], "counts": [3]}},
        {"step": 10, "sae": "sae", "eval_loss": 0.5, "eval_fvu": 0.1},
        train_line(20),
        {"step": 20, "sae": "sae", "ce_loss_recovered": float("nan"), "kl_spliced": 0.01},
    ]
    for _ in range(2):  # a redelivered job logs the same lines again
        with session_scope(db_url) as s:
            assert repo.add_metrics(s, tid, lines) == 5
    with session_scope(db_url) as s:
        rows = repo.metrics(s, tid)
        assert [(r.step, r.kind) for r in rows] == [
            (10, "density"),
            (10, "eval"),
            (10, "train"),
            (20, "downstream"),
            (20, "train"),
        ]
        assert rows[3].metrics == {"ce_loss_recovered": None, "kl_spliced": 0.01}  # NaN → null
        # a line merged by the job layer splits into the same rows; a new value wins
        merged = {**train_line(10, loss=0.25), "eval_loss": 0.4, "eval_fvu": 0.1}
        assert repo.add_metrics(s, tid, [merged]) == 2
    with session_scope(db_url) as s:
        assert count(s, TrainingMetric, training_id=tid) == 5
        step10 = {r.kind: r.line for r in repo.metrics(s, tid, end_step=10)}
        assert step10["train"]["loss"] == 0.25 and step10["eval"]["eval_loss"] == 0.4
        assert step10["train"]["step"] == 10 and step10["train"]["sae"] == "sae"
        # an empty final line must not blank what is stored
        assert repo.add_metrics(s, tid, [{"step": 20, "sae": "sae"}]) == 0
        with pytest.raises(ValueError, match="step"):
            repo.add_metrics(s, tid, [{"sae": "sae", "loss": 1.0}])


def test_a_thousand_lines_are_one_statement_and_one_commit(db_url: str) -> None:
    with session_scope(db_url) as s:
        tid = new_run(s)
    lines = [train_line(step) for step in range(1000)]
    with recorded(get_engine(db_url)) as seen, session_scope(db_url) as s:
        assert repo.add_metrics(s, tid, lines) == 1000
    assert len(seen["commits"]) == 1
    assert len(seen["inserts"]) == 1
    with session_scope(db_url) as s:
        assert count(s, TrainingMetric, training_id=tid) == 1000


def test_metrics_by_step_range_sae_and_kind(db_url: str) -> None:
    with session_scope(db_url) as s:
        tid, other = new_run(s), new_run(s, "other")
        lines = [train_line(step, sae) for step in range(0, 101, 10) for sae in ("a", "b")]
        lines += [{"step": 50, "sae": "a", "eval_loss": 0.3}]
        repo.add_metrics(s, tid, lines)
        repo.add_metrics(s, other, [train_line(30)])
    with session_scope(db_url) as s:
        rows = repo.metrics(s, tid, start_step=20, end_step=50)
        assert [(r.step, r.sae, r.kind) for r in rows] == [
            (20, "a", "train"),
            (20, "b", "train"),
            (30, "a", "train"),
            (30, "b", "train"),
            (40, "a", "train"),
            (40, "b", "train"),
            (50, "a", "eval"),
            (50, "a", "train"),
            (50, "b", "train"),
        ]
        assert [r.step for r in repo.metrics(s, tid, start_step=20, limit=3)] == [20, 20, 30]
        assert [r.step for r in repo.metrics(s, tid, sae="b", start_step=90)] == [90, 100]
        assert [r.step for r in repo.metrics(s, tid, kind="eval")] == [50]
        # a reconnecting client asks for what came after the last step it saw
        assert {r.step for r in repo.metrics(s, tid, start_step=91)} == {100}


def test_resume_truncates_metrics_and_checkpoints_after_its_step(db_url: str) -> None:
    with session_scope(db_url) as s:
        tid = new_run(s)
        repo.add_metrics(s, tid, [train_line(step, sae) for step in (10, 20, 30) for sae in "ab"])
        for step in (10, 20, 30):
            repo.add_checkpoint(s, tid, sae="a", step=step, path=f"runs/x/a/step_{step}")
        for step in (10, 20):
            repo.add_checkpoint(s, tid, sae="b", step=step, path=f"runs/x/b/step_{step}")
        assert repo.delete_metrics_after(s, tid, 20) == 2
        gone = repo.delete_checkpoints_after(s, tid, 20)
        assert [(c.sae, c.step) for c in gone] == [("a", 30)]
        assert repo.delete_metrics_after(s, tid, 10, sae="a") == 1
    with session_scope(db_url) as s:
        assert [(r.step, r.sae) for r in repo.metrics(s, tid)] == [
            (10, "a"),
            (10, "b"),
            (20, "b"),
        ]


# ---- deletes and checkpoints --------------------------------------------------------------


def test_deleting_runs_cascades_to_metrics_and_checkpoints(db_url: str) -> None:
    with session_scope(db_url) as s:
        gone, kept, running = new_run(s, "gone"), new_run(s, "kept"), new_run(s, "running")
        child = repo.create_training(s, config(), name="retry", parent_id=gone).id
        for tid in (gone, kept):
            repo.add_metrics(s, tid, [train_line(step) for step in range(5)])
            repo.add_checkpoint(s, tid, sae="sae", step=4, path="runs/x/checkpoints/step_4")
        repo.claim(s, running, "w1")
    with session_scope(db_url) as s, pytest.raises(repo.InvalidTransition, match="running"):
        repo.delete_trainings(s, [gone, running])
    with session_scope(db_url) as s:
        deleted = repo.delete_trainings(s, [gone, 10**9])
        assert [r.name for r in deleted] == ["gone"]
    with session_scope(db_url) as s:
        assert count(s, TrainingMetric, training_id=gone) == 0
        assert count(s, Checkpoint, training_id=gone) == 0
        assert count(s, TrainingMetric, training_id=kept) == 5
        assert count(s, Checkpoint, training_id=kept) == 1
        assert repo.get_training(s, child).parent_id is None
        assert [r.id for r in repo.delete_trainings(s, [running], force=True)] == [running]


def test_best_checkpoint_moves_and_is_protected(db_url: str) -> None:
    with session_scope(db_url) as s:
        tid = new_run(s)
        a = repo.add_checkpoint(s, tid, sae="sae", step=10, path="r/s10", is_best=True)
        b = repo.add_checkpoint(s, tid, sae="sae", step=20, path="r/s20", eval_loss=0.9)
        c = repo.add_checkpoint(s, tid, sae="sae", step=30, path="r/s30", is_best=True)
        # a resumed job records the checkpoint it resumes from again: no duplicate
        again = repo.add_checkpoint(s, tid, sae="sae", step=30, path="r/s30", is_best=True)
        assert again.id == c.id
        assert [x.step for x in repo.list_checkpoints(s, tid)] == [10, 20, 30]
        assert [x.id for x in repo.best_checkpoints(s, tid)] == [c.id]
        with pytest.raises(repo.BestCheckpointProtected):
            repo.delete_checkpoint(s, c.id)
        with pytest.raises(repo.NotFound):
            repo.delete_checkpoint(s, b.id, training_id=tid + 1)  # another run's id space
        assert repo.delete_checkpoint(s, a.id).path == "r/s10"
        assert repo.delete_checkpoint(s, c.id, allow_best=True).step == 30
        assert [x.step for x in repo.list_checkpoints(s, tid)] == [20]


# ---- datasets, templates, listing ---------------------------------------------------------


def test_datasets_and_templates(db_url: str) -> None:
    with session_scope(db_url) as s:
        ds = repo.create_dataset(s, {"model": "m", "hooks": ["h"]}, name="demo", path="act/demo")
        with pytest.raises(repo.NameTaken):
            repo.create_dataset(s, {}, name="demo", path="act/other")
    with session_scope(db_url) as s:
        assert repo.claim_dataset(s, ds.id, "w1") is not None
        beat = repo.dataset_heartbeat(s, ds.id, "w1", contexts=5, target_contexts=10, rows=640)
        assert beat == repo.Heartbeat(True, None)
        with pytest.raises(repo.InvalidTransition, match="finalized"):
            repo.request_dataset_control(s, ds.id, "stop_and_finalize")
        assert repo.request_dataset_control(s, ds.id, "pause").row.control == "pause"
        done = repo.set_dataset_status(s, ds.id, "paused", worker="w1", contexts=6)
        assert (done.status, done.control, done.contexts, done.rows) == ("paused", None, 6, 640)
        tid = repo.create_training(s, config(), name="on demo", dataset_id=ds.id).id
        assert repo.list_trainings(s, dataset_id=ds.id).total == 1
        assert [d.name for d in repo.delete_datasets(s, [ds.id])] == ["demo"]
        assert repo.get_training(s, tid).dataset_id is None
    with session_scope(db_url) as s:
        t1 = repo.create_template(s, config(), name="topk-small", description="d")
        repo.create_template(s, {"lr": 1e-3}, name="b-partial", favourite=True)
        assert t1.config["sae"]["architecture"] == "topk"
        assert [t.name for t in repo.list_templates(s).items] == ["b-partial", "topk-small"]
        repo.update_template(s, t1.id, favourite=True, name="a-renamed")
        assert [t.name for t in repo.list_templates(s, favourite=True).items] == [
            "a-renamed",
            "b-partial",
        ]
        with pytest.raises(ValueError, match="cannot update"):
            repo.update_template(s, t1.id, id=5)
        assert repo.delete_templates(s, [t1.id, 10**9]) == 1
        with pytest.raises(repo.NotFound):
            repo.get_template(s, t1.id)


def test_paths_stay_inside_the_data_dir(db_url: str) -> None:
    assert repo.relative_path("./runs//a/") == "runs/a"
    with session_scope(db_url) as s:
        for bad in ("../etc", "/abs/path", "runs/../../x", "C:\\x", ""):
            with pytest.raises(ValueError):
                repo.create_dataset(s, {}, name=f"bad {bad}", path=bad)
            with pytest.raises(ValueError):
                repo.create_training(s, config(out="runs/ok"), name="x", out_dir=bad or "..")


def test_list_trainings_filters_and_pages(db_url: str) -> None:
    with session_scope(db_url) as s:
        ids = [new_run(s, f"r{i}") for i in range(5)]
        repo.claim(s, ids[1], "w")
        repo.request_control(s, ids[2], "stop")
    with session_scope(db_url) as s:
        page = repo.list_trainings(s, limit=2, offset=1)
        assert page.total == 5 and [r.id for r in page.items] == [ids[3], ids[2]]
        assert repo.list_trainings(s, status="queued").total == 3
        both = repo.list_trainings(s, status=["running", "cancelled"])
        assert sorted(r.id for r in both.items) == [ids[1], ids[2]]
        row = repo.update_training(s, ids[0], name="renamed", celery_task_id="abc")
        assert (row.name, row.architecture, row.d_sae, row.total_steps) == (
            "renamed",
            "topk",
            64,
            100,
        )
        assert row.created_at.tzinfo is not None
        with pytest.raises(ValueError, match="status"):
            repo.update_training(s, ids[0], status="completed")
