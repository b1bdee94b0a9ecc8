"""What the web studio calls besides the resources: config checks with estimates before
anything is queued, the architectures with their defaults, the one-click demo, and the
built web bundle at ``/`` (each on SQLite and PostgreSQL, no worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from api_helpers import API, sent_tasks
from fastapi.testclient import TestClient

from saestudio.api.app import mount_web
from saestudio.jobs.tasks import EXTRACT_TASK, TRAIN_TASK
from saestudio.settings import Settings

pytestmark = pytest.mark.integration


def _body(**cfg: object) -> dict:
    base = {"activations": "acts.npy", "sae": {"architecture": "topk", "k": 32}, "steps": 100}
    return {"name": "v", "config": {**base, **cfg}}


def test_validate_resolves_defaults_and_estimates(client: TestClient, settings: Settings) -> None:
    np.save(settings.data_dir / "acts.npy", np.zeros((100, 24), np.float32))
    r = client.post(f"{API}/trainings/validate", json=_body(batch_size=256))
    assert r.status_code == 200, r.text
    plan = r.json()
    # d_sae from expansion_factor 8 × the file's width; TopK lr scaled as Gao et al. §A
    assert plan["d_in"] == 24 and plan["resolved"]["sae"]["d_sae"] == 192
    assert plan["resolved"]["lr"] == pytest.approx(8e-4 / (192 / 2**14) ** 0.5)
    est = plan["estimate"]
    assert est["parameters"] == 24 * 192 * 2 + 192 + 24 and est["tokens"] == 100 * 256
    assert (
        0 < est["seconds_gpu"] < est["seconds_cpu"] and est["memory_bytes"] > 4 * est["parameters"]
    )
    assert client.get(f"{API}/trainings").json()["total"] == 0  # nothing queued


def test_configs_that_cannot_train_are_422_naming_the_field(
    client: TestClient, settings: Settings
) -> None:
    np.save(settings.data_dir / "acts.npy", np.zeros((100, 4), np.float32))
    # k 64 > d_sae 32 (= 8 × 4): only knowable with the data's width
    for url in (f"{API}/trainings/validate", f"{API}/trainings"):
        r = client.post(url, json=_body(sae={"architecture": "topk", "k": 64}))
        assert r.status_code == 422, r.text
        err = r.json()["detail"][0]
        assert err["loc"] == ["body", "config", "sae", "k"] and "d_sae" in err["msg"]
    r = client.post(f"{API}/trainings/validate", json=_body(lr=-1))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "config", "lr"]
    assert sent_tasks(settings) == [] and client.get(f"{API}/trainings").json()["total"] == 0


def test_architectures_list_their_defaults(client: TestClient) -> None:
    archs = {a["name"]: a for a in client.get(f"{API}/architectures").json()}
    assert set(archs) >= {"standard", "jumprelu", "topk", "batchtopk", "transcoder"}
    assert archs["topk"]["uses_k"] and not archs["jumprelu"]["uses_k"]
    assert archs["jumprelu"]["defaults"]["adam_beta1"] == 0.0  # Gemma Scope
    assert archs["standard"]["defaults"]["sparsity_coefficient"] == 1.0  # issue 13
    assert archs["transcoder"]["activation"] is None
    mat = archs["matryoshka_batchtopk"]
    assert mat["uses_k"] and mat["activation"] == "matryoshka_batchtopk"
    assert "d_sae/64" in mat["sae_defaults"]["matryoshka_widths"]


def test_matryoshka_widths_resolve_and_bad_ones_are_422(
    client: TestClient, settings: Settings
) -> None:
    np.save(settings.data_dir / "acts.npy", np.zeros((100, 16), np.float32))
    sae = {"architecture": "matryoshka_batchtopk", "k": 8}
    r = client.post(f"{API}/trainings/validate", json=_body(sae=sae))
    assert r.status_code == 200, r.text
    assert r.json()["resolved"]["sae"]["matryoshka_widths"] == [2, 8, 32, 128]  # 8 × 16
    # the last width must be d_sae (128), only knowable with the data's width
    r = client.post(f"{API}/trainings", json=_body(sae={**sae, "matryoshka_widths": [16, 64]}))
    assert r.status_code == 422, r.text
    err = r.json()["detail"][0]
    assert err["loc"] == ["body", "config", "sae", "matryoshka_widths"] and "d_sae" in err["msg"]


def test_demo_queues_extraction_once_and_a_training_on_it(
    client: TestClient, settings: Settings
) -> None:
    first = client.post(f"{API}/demo")
    assert first.status_code == 201, first.text
    ds, run = first.json()["dataset"], first.json()["training"]
    assert ds["name"] == "demo" and run["dataset_id"] == ds["id"]
    assert run["config"]["sae"]["architecture"] == "topk"
    second = client.post(f"{API}/demo").json()
    assert second["dataset"]["id"] == ds["id"] and second["training"]["id"] != run["id"]
    tasks = sent_tasks(settings)
    assert tasks.count((EXTRACT_TASK, [ds["id"]])) == 1  # extracted once
    assert (TRAIN_TASK, [run["id"]]) in tasks and (TRAIN_TASK, [second["training"]["id"]]) in tasks


def test_web_bundle_served_with_client_routes(tmp_path: Path) -> None:
    from fastapi import FastAPI

    web = tmp_path / "web"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text("<div id=root></div>")
    (web / "assets" / "app-1.js").write_text("console.log(1)")
    app = FastAPI()
    mount_web(app, web)
    c = TestClient(app)
    assert c.get("/").text == "<div id=root></div>"
    assert c.get("/runs/3").text == "<div id=root></div>"  # a client-side route
    js = c.get("/assets/app-1.js")
    assert js.text == "console.log(1)" and "immutable" in js.headers["cache-control"]
    assert c.get("/api/v1/nothing").status_code == 404
    assert c.get("/../../etc/passwd").text == "<div id=root></div>"  # never a file outside
