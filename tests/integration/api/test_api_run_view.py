"""What the run views read from the API besides the row: each job's allowed ``actions``
(one table, ``saestudio.store.states``) and, on a run's detail, the hyperparameters its
SAEs really use with their source (issue 14 item 5; issue 15 item 5)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from api_helpers import API
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from store_helpers import config, new_run

from saestudio.settings import Settings
from saestudio.store import repo
from saestudio.store.db import session_scope
from saestudio.store.states import DATASET_ACTIONS, RUN_ACTIONS, STATUSES
from saestudio.training.config import resolve

pytestmark = pytest.mark.integration

CONTROL = {"pause", "resume", "stop", "stop_and_finalize"}


def _run_in(s: Session, status: str) -> int:
    """A run in ``status`` the way the service gets there (claim, then report)."""
    tid = new_run(s)
    repo.add_checkpoint(s, tid, sae="sae", step=10, path="runs/x/checkpoints/step_00000010")
    if status != "queued":
        repo.claim(s, tid, "w1")
    if status not in ("queued", "running"):
        repo.set_status(s, tid, status, worker="w1")
    return tid


def test_each_run_lists_what_the_api_accepts(client: TestClient, settings: Settings) -> None:
    """Every action a run's ``actions`` offers in each status is accepted there: a
    button never meets a 409."""
    assert set(RUN_ACTIONS) == set(STATUSES) == set(DATASET_ACTIONS)
    for status in STATUSES:
        with session_scope(settings.db_url) as s:
            ids = {a: _run_in(s, status) for a in RUN_ACTIONS[status]}
        for action, tid in ids.items():
            shown = client.get(f"{API}/trainings/{tid}").json()
            assert shown["status"] == status
            assert shown["actions"] == list(RUN_ACTIONS[status])
            if action in CONTROL:
                r = client.post(f"{API}/trainings/{tid}/control", json={"action": action})
            elif action == "retry":
                r = client.post(f"{API}/trainings/{tid}/retry")
            elif action == "delete":
                r = client.delete(f"{API}/trainings/{tid}")
            else:  # download: the route exists; a run without an export says so (404)
                r = client.get(f"{API}/trainings/{tid}/sae/download")
                assert r.status_code == 404 and "export" in r.json()["detail"]
                continue
            assert r.status_code < 400, (status, action, r.text)
    listed = client.get(f"{API}/trainings").json()["items"]
    assert listed and all("actions" in t for t in listed)


def test_a_pending_request_leaves_only_withdrawing_a_pause(
    client: TestClient, settings: Settings
) -> None:
    with session_scope(settings.db_url) as s:
        tid = _run_in(s, "running")
    assert client.get(f"{API}/trainings/{tid}").json()["actions"] == list(RUN_ACTIONS["running"])
    r = client.post(f"{API}/trainings/{tid}/control", json={"action": "pause"})
    assert r.json()["control"] == "pause" and r.json()["actions"] == ["resume"]
    r = client.post(f"{API}/trainings/{tid}/control", json={"action": "resume"})
    assert r.json()["control"] is None
    r = client.post(f"{API}/trainings/{tid}/control", json={"action": "stop"})
    assert r.json()["actions"] == []


def test_each_dataset_lists_what_the_api_accepts(client: TestClient, settings: Settings) -> None:
    for status in STATUSES:
        for action in DATASET_ACTIONS[status]:
            with session_scope(settings.db_url) as s:
                name = f"{status}-{action}"
                row = repo.create_dataset(s, {}, name=name, path=f"activations/{name}")
                if status != "queued":
                    repo.claim_dataset(s, row.id, "w1")
                if status not in ("queued", "running"):
                    repo.set_dataset_status(s, row.id, status, worker="w1")
                did = row.id
            base = f"{API}/activation-datasets/{did}"
            assert client.get(base).json()["actions"] == list(DATASET_ACTIONS[status])
            if action == "delete":
                r = client.delete(base)
            else:
                r = client.post(f"{base}/control", json={"action": action})
            assert r.status_code < 400, (status, action, r.text)


def _plant_checkpoint(settings: Settings, tid: int, step: int, cfg: dict[str, Any]) -> None:
    """A checkpoint folder with the state.json the trainer writes (config + resolved)."""
    folder = f"runs/{tid}/checkpoints/step_{step:08d}"
    (settings.data_dir / folder).mkdir(parents=True)
    tc = config(**cfg)
    state = {
        "step": step,
        "config": tc.model_dump(mode="json"),
        "resolved": resolve(tc, 96, None).to_json(),
    }
    (settings.data_dir / folder / "state.json").write_text(json.dumps(state))
    with session_scope(settings.db_url) as s:
        repo.add_checkpoint(s, tid, sae="sae", step=step, path=folder)


def test_detail_shows_the_resolved_hyperparameters_and_their_source(
    client: TestClient, settings: Settings
) -> None:
    """The run page's table: what the run used (not "default"), and why."""
    cfg = {"sae": {"architecture": "topk", "k": 8, "expansion_factor": 4}, "batch_size": 512}
    with session_scope(settings.db_url) as s:
        tid = new_run(s, **cfg)
    # no checkpoint, and widths unknown here (no manifest): nothing to resolve yet
    assert client.get(f"{API}/trainings/{tid}").json()["resolved"] is None
    _plant_checkpoint(settings, tid, 10, cfg)
    _plant_checkpoint(settings, tid, 20, {**cfg, "lr": 0.002})  # the latest checkpoint wins
    got = client.get(f"{API}/trainings/{tid}").json()["resolved"]["sae"]
    assert got["sae.d_sae"] == {"value": 384, "source": "derived"}  # 4 × the data's 96
    assert got["sae.k"] == {"value": 8, "source": "set"}
    assert got["lr"] == {"value": 0.002, "source": "set"}
    assert got["batch_size"] == {"value": 512, "source": "set"}
    assert got["adam_beta1"]["source"] == "default" and got["adam_beta1"]["value"] == 0.9
    assert got["aux_k"] == {"value": 48, "source": "derived"}  # d_out / 2
    assert got["dead_after_tokens"]["source"] == "derived"
    assert got["dead_after_tokens"]["value"] > 0
    assert got["normalize_activations"]["source"] == "default"
    assert got["sweep"] == {"value": {}, "source": "default"}  # a default factory's {}
    assert got["hook"] == {"value": ["resid_post.3"], "source": "set"}
    assert got["normalize_activations"]["value"] is not None
    # the list stays light: no checkpoint reads for 500 cards
    assert "resolved" not in client.get(f"{API}/trainings").json()["items"][0]


def test_topk_lr_left_empty_is_derived(client: TestClient, settings: Settings) -> None:
    cfg = {"sae": {"architecture": "topk", "k": 8, "d_sae": 64}}
    with session_scope(settings.db_url) as s:
        tid = new_run(s, **cfg)
    _plant_checkpoint(settings, tid, 10, cfg)
    lr = client.get(f"{API}/trainings/{tid}").json()["resolved"]["sae"]["lr"]
    assert lr["source"] == "derived" and lr["value"] > 0


def test_a_checkpoint_without_state_json_is_skipped(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.db_url) as s:
        tid = new_run(s)
        repo.add_checkpoint(s, tid, sae="sae", step=10, path="runs/gone/step_00000010")
    r = client.get(f"{API}/trainings/{tid}")
    assert r.status_code == 200 and r.json()["resolved"] is None


def test_before_the_first_checkpoint_the_plan_is_shown(
    client: TestClient, settings: Settings
) -> None:
    """A queued run on data with a known width shows what the trainer will resolve."""
    np.save(settings.data_dir / "acts.npy", np.zeros((64, 24), dtype=np.float32))
    config = {"activations": "acts.npy", "sae": {"architecture": "topk", "k": 4}, "steps": 10}
    run = client.post(f"{API}/trainings", json={"name": "planned", "config": config}).json()
    got = client.get(f"{API}/trainings/{run['id']}").json()["resolved"]["sae"]
    assert got["sae.d_in"] == {"value": 24, "source": "derived"}
    assert got["sae.d_sae"] == {"value": 24 * 8, "source": "derived"}  # default expansion 8
    assert got["steps"] == {"value": 10, "source": "set"}
    assert got["out"]["value"] == run["out_dir"]  # the run's own folder, not a default
