"""The path policy (SPEC §E) on every route that takes a path or a name: absolute paths,
``..``, symlinks pointing out and URL-encoded spellings are a 400 naming the field, and
nothing is stored or queued for them; what is allowed is stored absolute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from api_helpers import API, sent_tasks, train_body
from fastapi.testclient import TestClient

from saestudio.demo import demo_model_dir
from saestudio.settings import Settings

pytestmark = pytest.mark.integration

ESCAPES = [
    "/etc/passwd",  # absolute, outside
    "../../etc/passwd",  # ..
    "texts/../../../etc/passwd",
    "escape/secret.txt",  # a symlink inside the data dir pointing out
    "%2e%2e/%2e%2e/etc/passwd",  # URL-encoded ..
    "%252e%252e%252fetc%252fpasswd",  # twice
    "%2Fetc%2Fpasswd",  # an encoded absolute path
]


@pytest.fixture
def planted(settings: Settings, tmp_path: Path) -> Path:
    """An outside folder with a secret text file, and ``data/escape`` → it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the server's secret\n" * 50)
    (settings.data_dir / "escape").symlink_to(outside)
    (settings.data_dir / "models").mkdir()
    (settings.data_dir / "models" / "escape").symlink_to(outside)
    (settings.data_dir / "texts").mkdir()
    (settings.data_dir / "texts" / "ok.txt").write_text("fine text\n" * 50)
    return outside


def _refused(client: TestClient, settings: Settings, r: Any, field: str) -> None:
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(field), r.json()
    assert client.get(f"{API}/trainings").json()["total"] == 0
    assert client.get(f"{API}/activation-datasets").json()["total"] == 0
    assert sent_tasks(settings) == []


def _on_the_fly(**kw: Any) -> dict[str, Any]:
    cfg = {
        "model": demo_model_dir(),
        "dataset": "texts/ok.txt",
        "hook": ["resid_post.1"],
        "sae": {"architecture": "topk", "d_sae": 64, "k": 8},
        "steps": 10,
        **kw,
    }
    return {"name": "otf", "config": cfg}


@pytest.mark.parametrize("route", ["/trainings", "/trainings/validate"])
@pytest.mark.parametrize("value", ESCAPES)
def test_training_text_and_data_paths_are_confined(
    client: TestClient, settings: Settings, planted: Path, route: str, value: str
) -> None:
    r = client.post(API + route, json=_on_the_fly(dataset=value))
    _refused(client, settings, r, "config.dataset")
    r = client.post(API + route, json=train_body(activations=value))
    _refused(client, settings, r, "config.activations")
    body = train_body(targets=value)
    body["config"]["sae"] = {"architecture": "transcoder", "d_sae": 64}
    _refused(client, settings, client.post(API + route, json=body), "config.targets")


@pytest.mark.parametrize(
    "value",
    [
        "/etc",  # absolute, outside every root
        "../../models",
        "escape",  # data/models/escape → outside
        "texts",  # a folder in the data dir but not under data/models
        "%2e%2e%2f%2e%2e%2fetc",
        "saestudio",  # a folder of that name in the server's cwd (the repo)
    ],
)
def test_models_are_hub_names_or_under_the_model_roots(
    client: TestClient, settings: Settings, planted: Path, value: str
) -> None:
    for route in ("/trainings", "/trainings/validate"):
        r = client.post(API + route, json=_on_the_fly(model=value))
        _refused(client, settings, r, "config.model")
    cfg = {"model": value, "dataset": "demo:pydoc", "hooks": ["resid_post.1"], "out": "acts/a"}
    r = client.post(f"{API}/activation-datasets", json={"name": "a", "config": cfg})
    _refused(client, settings, r, "config.model")


def test_allowed_sources_are_stored_absolute(
    client: TestClient, settings: Settings, planted: Path
) -> None:
    r = client.post(f"{API}/trainings", json=_on_the_fly())
    assert r.status_code == 201, r.text
    cfg = r.json()["config"]
    assert cfg["dataset"] == str(settings.data_dir / "texts/ok.txt")
    assert cfg["model"] == str(Path(demo_model_dir()).resolve())
    # a hub name passes as given (the worker downloads it or finds it in the HF cache)
    ds = {"model": "org/some-model", "dataset": "demo:pydoc", "hooks": ["h"], "out": "acts/a"}
    r = client.post(f"{API}/activation-datasets", json={"name": "a", "config": ds})
    assert r.status_code == 201 and r.json()["config"]["model"] == "org/some-model"


@pytest.mark.parametrize("value", [*ESCAPES, ".", "escape"])
def test_extraction_paths_are_confined(
    client: TestClient, settings: Settings, planted: Path, value: str
) -> None:
    base = {"model": "gpt2", "dataset": "demo:pydoc", "hooks": ["resid_post.1"], "out": "acts/a"}
    for field in ("out", "dataset"):
        if field == "dataset" and value in (".", "escape"):
            continue  # a folder inside the data dir: a valid local text folder
        r = client.post(
            f"{API}/activation-datasets", json={"name": "a", "config": {**base, field: value}}
        )
        _refused(client, settings, r, f"config.{field}")


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/b", ".hidden", "%2e%2e%2fx", "..\\x"])
def test_names_are_plain(client: TestClient, settings: Settings, name: str) -> None:
    cfg = {"model": "gpt2", "dataset": "demo:pydoc", "hooks": ["resid_post.1"], "out": "acts/a"}
    r = client.post(f"{API}/activation-datasets", json={"name": name, "config": cfg})
    _refused(client, settings, r, "name")
    template = {"name": name, "config": {}}
    assert client.post(f"{API}/templates", json=template).status_code == 400
    r = client.post(f"{API}/templates/import", json=[template])
    assert r.status_code == 400
    tid = client.post(f"{API}/templates", json={"name": "ok", "config": {}}).json()["id"]
    assert client.patch(f"{API}/templates/{tid}", json={"name": name}).status_code == 400
    assert client.get(f"{API}/templates").json()["total"] == 1


def test_retry_rechecks_a_symlink_pointed_out_since(
    client: TestClient, settings: Settings, planted: Path
) -> None:
    (settings.data_dir / "texts" / "moved.txt").write_text("text\n" * 50)
    r = client.post(f"{API}/trainings", json=_on_the_fly(dataset="texts/moved.txt"))
    assert r.status_code == 201, r.text
    (settings.data_dir / "texts" / "moved.txt").unlink()
    (settings.data_dir / "texts" / "moved.txt").symlink_to(planted / "secret.txt")
    r = client.post(f"{API}/trainings/{r.json()['id']}/retry")
    assert r.status_code == 400 and r.json()["detail"].startswith("config.dataset"), r.text
    assert client.get(f"{API}/trainings").json()["total"] == 1
