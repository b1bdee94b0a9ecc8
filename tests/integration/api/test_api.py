"""The HTTP API against a real migrated database (each test on SQLite and PostgreSQL),
with a tmp data dir and a SQLite broker file that receives task messages with no worker
running. Asserts what a client sees: status codes, bodies, the broker's messages."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from api_helpers import API, sent_tasks, train_body
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from store_helpers import new_run, train_line

from saestudio.api.app import create_app
from saestudio.jobs.tasks import EXTRACT_TASK, TRAIN_TASK
from saestudio.settings import Settings
from saestudio.store import repo
from saestudio.store.db import session_scope

pytestmark = pytest.mark.integration


# ---- trainings -------------------------------------------------------------------------------


def test_create_training_validates_queues_and_publishes(
    client: TestClient, settings: Settings
) -> None:
    r = client.post(f"{API}/trainings", json=train_body(lr=-1.0))
    assert r.status_code == 422
    assert any("lr" in e["loc"] for e in r.json()["detail"])
    r = client.post(
        f"{API}/trainings",
        json=train_body(sae={"architecture": "topk", "d_sae": 64, "k": 128}),
    )
    assert r.status_code == 422 and "k: must be at most d_sae" in r.text

    r = client.post(f"{API}/trainings", json=train_body(out="/etc/elsewhere"))
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "queued"
    # the service picks the folder, whatever the body said, and stores it once
    assert re.fullmatch(r"runs/\d{8}-\d{6}-run-one-[0-9a-f]{6}", run["out_dir"]), run["out_dir"]
    assert "out" not in run["config"]
    assert run["config"]["activations"] == str(settings.data_dir / "activations/demo")
    assert (TRAIN_TASK, [run["id"]]) in sent_tasks(settings)

    assert client.get(f"{API}/trainings/{run['id']}").json()["name"] == "run one"
    page = client.get(f"{API}/trainings", params={"status": "queued"}).json()
    assert page["total"] == 1 and page["items"][0]["id"] == run["id"]
    assert client.get(f"{API}/trainings", params={"status": "running"}).json()["total"] == 0
    r = client.patch(f"{API}/trainings/{run['id']}", json={"name": "renamed"})
    assert r.json()["name"] == "renamed"


def test_unknown_ids_are_404(client: TestClient) -> None:
    for method, path in [
        ("GET", "/trainings/999"),
        ("PATCH", "/trainings/999"),
        ("DELETE", "/trainings/999"),
        ("GET", "/trainings/999/metrics"),
        ("GET", "/trainings/999/checkpoints"),
        ("GET", "/activation-datasets/999"),
        ("GET", "/templates/999"),
    ]:
        kw: dict[str, Any] = {"json": {"name": "x"}} if method == "PATCH" else {}
        r = client.request(method, API + path, **kw)
        assert r.status_code == 404, (method, path, r.text)
        assert "999" in r.json()["detail"]
    # a training on an unknown activation dataset: 404, not a foreign-key 500
    r = client.post(f"{API}/trainings", json={**train_body(), "dataset_id": 999})
    assert r.status_code == 404 and "999" in r.json()["detail"], r.text


@pytest.mark.parametrize(
    "field,value",
    [
        ("activations", "../../etc/passwd"),
        ("activations", "/etc"),
        ("activations", "escape/inner"),  # a symlink in data_dir pointing outside
        ("targets", "runs/../../outside"),
    ],
)
def test_paths_outside_data_dir_are_refused(
    client: TestClient, settings: Settings, tmp_path: Path, field: str, value: str
) -> None:
    (settings.data_dir / "escape").symlink_to(tmp_path)
    body = train_body(**{field: value})
    if field == "targets":
        body["config"]["sae"] = {"architecture": "transcoder", "d_sae": 64, "k": 8}
    r = client.post(f"{API}/trainings", json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"]
    assert client.get(f"{API}/trainings").json()["total"] == 0
    assert sent_tasks(settings) == []


def test_control_retry_and_delete(client: TestClient, settings: Settings) -> None:
    tid = client.post(f"{API}/trainings", json=train_body()).json()["id"]
    # pause on a queued run parks it (no worker involved); resume re-queues and re-sends
    r = client.post(f"{API}/trainings/{tid}/control", json={"action": "pause"})
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = client.post(f"{API}/trainings/{tid}/control", json={"action": "resume"})
    assert r.json()["status"] == "queued"
    assert sent_tasks(settings).count((TRAIN_TASK, [tid])) == 2
    r = client.post(f"{API}/trainings/{tid}/control", json={"action": "explode"})
    assert r.status_code == 422

    with session_scope(settings.db_url) as s:
        repo.claim(s, tid, "w1")
        repo.set_status(s, tid, "completed", worker="w1")
    r = client.post(f"{API}/trainings/{tid}/control", json={"action": "pause"})
    assert r.status_code == 409 and "completed" in r.json()["detail"]

    r = client.post(f"{API}/trainings/{tid}/retry")
    assert r.status_code == 201
    child = r.json()
    assert child["parent_id"] == tid and child["status"] == "queued"
    assert (
        child["config"]["activations"]
        == client.get(f"{API}/trainings/{tid}").json()["config"]["activations"]
    )
    assert (TRAIN_TASK, [child["id"]]) in sent_tasks(settings)

    run_dir = settings.data_dir / child["out_dir"]
    run_dir.mkdir(parents=True)
    assert client.delete(f"{API}/trainings/{child['id']}").status_code == 204
    assert not run_dir.exists()
    r = client.post(f"{API}/trainings/bulk-delete", json={"ids": [tid, 12345]})
    assert r.json() == {"deleted": [tid]}
    assert client.get(f"{API}/trainings").json()["total"] == 0


# ---- metrics and checkpoints -----------------------------------------------------------------


def test_metrics_in_step_range(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.db_url) as s:
        tid = new_run(s)
        repo.add_metrics(s, tid, [train_line(step) for step in range(0, 50, 10)])
        repo.add_metrics(s, tid, [train_line(20, sae="other")])
    r = client.get(f"{API}/trainings/{tid}/metrics", params={"start_step": 10, "end_step": 30})
    assert r.status_code == 200
    rows = r.json()
    assert [(m["step"], m["sae"]) for m in rows] == [
        (10, "sae"),
        (20, "other"),
        (20, "sae"),
        (30, "sae"),
    ]
    assert rows[0]["kind"] == "train" and rows[0]["metrics"]["loss"] == 1.0
    one = client.get(f"{API}/trainings/{tid}/metrics", params={"sae": "other"}).json()
    assert [m["step"] for m in one] == [20]
    assert len(client.get(f"{API}/trainings/{tid}/metrics", params={"limit": 2}).json()) == 2


def test_checkpoints_best_is_protected(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.db_url) as s:
        tid = new_run(s)
        plain = repo.add_checkpoint(s, tid, sae="sae", step=10, path="runs/x/ck/10", eval_loss=2.0)
        best = repo.add_checkpoint(
            s, tid, sae="sae", step=20, path="runs/x/ck/20", is_best=True, eval_loss=1.0
        )
        ids = plain.id, best.id
    base = f"{API}/trainings/{tid}/checkpoints"
    assert [c["step"] for c in client.get(base).json()] == [10, 20]
    assert [c["id"] for c in client.get(f"{base}/best").json()] == [ids[1]]
    r = client.delete(f"{base}/{ids[1]}")
    assert r.status_code == 409 and r.json()["detail"]
    folder = settings.data_dir / "runs/x/ck/10"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{}")
    r = client.get(f"{base}/{ids[0]}/download")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.content[:2] == b"PK"
    assert client.delete(f"{base}/{ids[0]}").status_code == 204
    assert not folder.exists()
    assert client.delete(f"{base}/{ids[1]}", params={"allow_best": "true"}).status_code == 204
    assert client.get(base).json() == []
    assert client.get(f"{API}/trainings/{tid}/sae/download").status_code == 404


def test_resume_from_checkpoint_rewinds(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.db_url) as s:
        tid = new_run(s)
        ck10 = repo.add_checkpoint(s, tid, sae="sae", step=10, path="runs/x/ck/10").id
        repo.add_checkpoint(s, tid, sae="sae", step=20, path="runs/x/ck/20")
        repo.add_metrics(s, tid, [train_line(step) for step in (5, 10, 15, 20)])
        repo.claim(s, tid, "w1")
    base = f"{API}/trainings/{tid}/checkpoints"
    # running: resuming from a checkpoint is refused and nothing is dropped
    assert client.post(f"{base}/{ck10}/resume").status_code == 409
    assert len(client.get(base).json()) == 2
    with session_scope(settings.db_url) as s:
        repo.set_status(s, tid, "failed", error="boom", worker="w1")
    r = client.post(f"{base}/{ck10}/resume")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert [c["step"] for c in client.get(base).json()] == [10]
    steps = [m["step"] for m in client.get(f"{API}/trainings/{tid}/metrics").json()]
    assert steps == [5, 10]
    assert (TRAIN_TASK, [tid]) in sent_tasks(settings)
    # no checkpoint files on disk: export says so instead of failing
    assert client.post(f"{base}/{ck10}/export").status_code == 404


def test_running_run_cannot_be_deleted(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.db_url) as s:
        tid = new_run(s)
        repo.claim(s, tid, "w1")
    r = client.post(f"{API}/trainings/bulk-delete", json={"ids": [tid]})
    assert r.status_code == 409 and "running" in r.json()["detail"]
    assert client.delete(f"{API}/trainings/{tid}").status_code == 409
    assert client.get(f"{API}/trainings/{tid}").json()["status"] == "running"


# ---- datasets, templates, health, security ---------------------------------------------------


def test_datasets_create_and_refuse_escapes(client: TestClient, settings: Settings) -> None:
    cfg = {"model": "gpt2", "dataset": "demo:pydoc", "hooks": ["resid_post.3"], "out": "acts/a"}
    r = client.post(f"{API}/activation-datasets", json={"name": "a", "config": cfg})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["status"] == "queued" and ds["path"] == "acts/a"
    assert (EXTRACT_TASK, [ds["id"]]) in sent_tasks(settings)
    # "saestudio" exists relative to the cwd (the repo): the extractor would read it as a
    # local folder outside the data dir
    for bad in ({"out": "../x"}, {"dataset": "/etc/passwd.txt"}, {"dataset": "saestudio"}):
        r = client.post(f"{API}/activation-datasets", json={"name": "b", "config": {**cfg, **bad}})
        assert r.status_code == 400, r.text
    assert (
        client.post(f"{API}/activation-datasets", json={"name": "a", "config": cfg}).status_code
        == 409
    )
    (settings.data_dir / "texts").mkdir()
    (settings.data_dir / "texts/a.txt").write_text("hello")
    local = {**cfg, "dataset": "texts/a.txt", "out": "acts/local"}
    r = client.post(f"{API}/activation-datasets", json={"name": "local", "config": local})
    assert r.json()["config"]["dataset"] == str(settings.data_dir / "texts/a.txt")
    assert client.delete(f"{API}/activation-datasets/{r.json()['id']}").status_code == 204
    assert client.get(f"{API}/activation-datasets").json()["total"] == 1
    assert client.delete(f"{API}/activation-datasets/{ds['id']}").status_code == 204
    assert client.get(f"{API}/activation-datasets/{ds['id']}").status_code == 404
    ids = [
        client.post(f"{API}/activation-datasets", json={"name": n, "config": cfg}).json()["id"]
        for n in ("c", "d")
    ]
    r = client.post(f"{API}/activation-datasets/bulk-delete", json={"ids": ids})
    assert sorted(r.json()["deleted"]) == sorted(ids)


def test_dataset_pause_resume_stop(client: TestClient, settings: Settings) -> None:
    cfg = {"model": "gpt2", "dataset": "demo:pydoc", "hooks": ["resid_post.3"], "out": "acts/p"}
    did = client.post(f"{API}/activation-datasets", json={"name": "p", "config": cfg}).json()["id"]
    url = f"{API}/activation-datasets/{did}/control"
    r = client.post(url, json={"action": "pause"})
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = client.post(url, json={"action": "resume"})
    assert r.json()["status"] == "queued"
    assert sent_tasks(settings).count((EXTRACT_TASK, [did])) == 2
    r = client.post(url, json={"action": "stop_and_finalize"})
    assert r.status_code == 422 and "action" in r.text
    with session_scope(settings.db_url) as s:
        repo.claim_dataset(s, did, "w1")
    # running: the request waits for the worker, the status stays running
    r = client.post(url, json={"action": "stop"})
    assert r.json()["status"] == "running" and r.json()["control"] == "stop"
    with session_scope(settings.db_url) as s:
        repo.set_dataset_status(s, did, "completed", worker="w1")
    r = client.post(url, json={"action": "pause"})
    assert r.status_code == 409 and "completed" in r.json()["detail"]
    assert (
        client.post(f"{API}/activation-datasets/999/control", json={"action": "stop"}).status_code
        == 404
    )


def test_templates_crud_and_round_trip(client: TestClient, settings: Settings) -> None:
    body = {"name": "topk-64", "description": "small", "config": {"sae": {"k": 8}}}
    r = client.post(f"{API}/templates", json=body)
    assert r.status_code == 201
    tid = r.json()["id"]
    assert client.post(f"{API}/templates", json=body).status_code == 409
    assert client.post(f"{API}/templates", json={**body, "name": "../x"}).status_code == 400
    r = client.patch(f"{API}/templates/{tid}", json={"favourite": True})
    assert r.json()["favourite"] is True and r.json()["description"] == "small"
    exported = client.get(f"{API}/templates/export").json()
    assert exported == [{**body, "favourite": True}]

    assert client.delete(f"{API}/templates/{tid}").status_code == 204
    r = client.post(f"{API}/templates/import", json=[*exported, {**body, "name": "two"}])
    assert r.json() == {"created": ["topk-64", "two"], "skipped": []}
    assert client.post(f"{API}/templates/import", json=exported).json()["skipped"] == ["topk-64"]
    assert client.get(f"{API}/templates").json()["items"][0]["favourite"] is True
    r = client.post(f"{API}/templates/import", json=[{"name": "no config"}])
    assert r.status_code == 422

    huge = json.dumps([{**body, "description": "x" * (settings.max_upload_mb << 20)}])
    r = client.post(
        f"{API}/templates/import", content=huge, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_health(client: TestClient) -> None:
    r = client.get(f"{API}/health")
    assert r.status_code == 200
    assert r.json() | {"version": "-"} == {
        "status": "ok",
        "db": True,
        "broker": "sqlite",
        "version": "-",
    }


def test_token_required_beyond_localhost(settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="SAESTUDIO_API_TOKEN"):
        create_app(settings.model_copy(update={"host": "0.0.0.0"}))
    public = settings.model_copy(update={"host": "0.0.0.0", "api_token": "s3cret"})
    with TestClient(create_app(public)) as c:
        assert c.get(f"{API}/health").status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert c.get(f"{API}/trainings", headers=bad).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert c.get(f"{API}/health", headers=ok).status_code == 200
        assert c.get(f"{API}/trainings", headers=ok).status_code == 200
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            c.websocket_connect(f"{API}/ws/trainings/1") as ws,
        ):
            ws.receive_json()
        assert closed.value.code == 1008


def test_openapi_lists_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    for path in (
        "/api/v1/trainings",
        "/api/v1/trainings/{training_id}/control",
        "/api/v1/trainings/{training_id}/checkpoints/{checkpoint_id}/download",
        "/api/v1/trainings/{training_id}/sae/download",
        "/api/v1/activation-datasets/bulk-delete",
        "/api/v1/templates/import",
        "/api/v1/health",
    ):
        assert path in paths
    # the create body documents the full TrainConfig (a client can build forms from it)
    assert "TrainConfig" in spec["components"]["schemas"]
