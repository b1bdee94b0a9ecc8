"""``POST /trainings`` and ``/trainings/validate`` check every SAE the worker would train
— each sweep value, each hook — and refuse with a 422 naming the field; nothing is queued
for a job a worker would refuse at start. The estimate covers all the job's SAEs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from api_helpers import API, sent_tasks
from fastapi.testclient import TestClient

from saestudio.activations.extract import ExtractConfig, extract
from saestudio.demo import demo_model_dir
from saestudio.settings import Settings

pytestmark = pytest.mark.integration
ROUTES = ["/trainings/validate", "/trainings"]


@pytest.fixture(scope="module")
def minilm_acts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) activation dataset with hooks resid_post.1 and resid_post.2."""
    out = tmp_path_factory.mktemp("acts") / "minilm"
    cfg = ExtractConfig(
        model=demo_model_dir(), dataset="demo:pydoc", hooks=["resid_post.1", "resid_post.2"],
        out=str(out), context_length=32, max_tokens=256, device="cpu",
    )  # fmt: skip
    extract(cfg, progress=False)
    return out


def _body(**cfg: Any) -> dict[str, Any]:
    base = {"activations": "acts.npy", "sae": {"architecture": "topk", "k": 8}, "steps": 50}
    return {"name": "v", "config": {**base, **cfg}}


def _refused(client: TestClient, settings: Settings, body: dict[str, Any]) -> list[dict]:
    """Both routes answer 422; returns the errors of each. Nothing stored or queued."""
    errors = []
    for route in ROUTES:
        r = client.post(API + route, json=body)
        assert r.status_code == 422, (route, r.text)
        errors.append(r.json()["detail"][0])
    assert errors[0] == errors[1]
    assert client.get(f"{API}/trainings").json()["total"] == 0 and sent_tasks(settings) == []
    return errors


@pytest.fixture
def acts_npy(settings: Settings) -> None:
    np.save(settings.data_dir / "acts.npy", np.zeros((200, 4), np.float32))


def test_sweep_value_above_an_explicit_d_sae(
    client: TestClient, settings: Settings, acts_npy: None
) -> None:
    body = _body(sae={"architecture": "topk", "d_sae": 64, "k": 8}, sweep={"k": [8, 4096]})
    err = _refused(client, settings, body)[0]
    assert "sweep.k[1]: must be at most d_sae (64), got 4096" in err["msg"]


def test_sweep_value_the_optimiser_refuses(
    client: TestClient, settings: Settings, acts_npy: None
) -> None:
    err = _refused(client, settings, _body(sweep={"lr": [1e-3, -1e-3]}))[0]
    assert "sweep.lr[1]:" in err["msg"] and "greater than 0" in err["msg"]
    err = _refused(client, settings, _body(sweep={"k": [8, 2.5]}))[0]
    assert "sweep.k[1]: must be a whole number" in err["msg"]


def test_sweep_value_above_d_sae_known_only_from_the_data(
    client: TestClient, settings: Settings, acts_npy: None
) -> None:
    # d_sae = 8 × 4 columns = 32: only the data says k 64 cannot train
    err = _refused(client, settings, _body(sweep={"k": [8, 64]}))[0]
    assert err["loc"] == ["body", "config", "sweep", "k", "1"]
    assert err["msg"] == "sweep.k[1]: must be at most d_sae (32), got 64"


def test_second_hook_missing_from_the_dataset(
    client: TestClient, settings: Settings, minilm_acts: Path
) -> None:
    shutil.copytree(minilm_acts, settings.data_dir / "minilm")
    body = _body(activations="minilm", hook=["resid_post.1", "resid_post.9"])
    err = _refused(client, settings, body)[0]
    assert err["loc"] == ["body", "config", "hook", "1"]
    assert "hook[1]: 'resid_post.9' is not in this activation dataset" in err["msg"]
    ok = _body(activations="minilm", hook=["resid_post.1", "resid_post.2"], sweep={"k": [8, 16]})
    plan = client.post(f"{API}/trainings/validate", json=ok).json()
    one = client.post(
        f"{API}/trainings/validate", json=_body(activations="minilm", hook=["resid_post.1"])
    ).json()
    # 2 hooks × 2 k values, each SAE 384 → 3,072 latents: the estimate counts all four
    assert plan["saes"] == 4 and plan["d_in"] == 384
    assert plan["estimate"]["parameters"] == 4 * one["estimate"]["parameters"]
    assert plan["estimate"]["flops_per_step"] > 3.9 * one["estimate"]["flops_per_step"]
    assert plan["estimate"]["memory_bytes"] > 2 * one["estimate"]["memory_bytes"]


def test_on_the_fly_hooks_resolve_against_the_model(client: TestClient, settings: Settings) -> None:
    (settings.data_dir / "t.txt").write_text("some text to read\n" * 100)
    body = {
        "name": "otf",
        "config": {
            "model": demo_model_dir(), "dataset": "t.txt", "hook": ["resid_post.1", "resid_post.99"],
            "sae": {"architecture": "topk", "k": 8}, "steps": 10,
        },
    }  # fmt: skip
    err = _refused(client, settings, body)[0]
    assert err["loc"] == ["body", "config", "hook", "1"]
    assert "hook[1]: resid_post.99: the model has 6 layers" in err["msg"]
    body["config"]["hook"] = ["resid_post.1", "no_such.module"]
    assert "unknown hook 'no_such.module'" in _refused(client, settings, body)[0]["msg"]
    body["config"]["hook"] = ["resid_post.1", "mlp_out.5"]
    plan = client.post(f"{API}/trainings/validate", json=body)
    assert plan.status_code == 200, plan.text
    # MiniLM's widths, read from its module tree on the meta device (no weights)
    assert plan.json()["d_in"] == 384 and plan.json()["saes"] == 2
