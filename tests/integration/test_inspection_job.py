"""The inspection job on real databases: a completed run is inspected over the held-out
end of its real MiniLM dataset by the features library, the latents are indexed and
served by the API; a stop cancels it, a dead worker's inspection is re-queued."""

from __future__ import annotations

import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent / "api"))
from features_helpers import D_SAE, inspected_run  # noqa: E402

from saestudio.api.app import create_app  # noqa: E402
from saestudio.jobs.events import MemoryEventSink  # noqa: E402
from saestudio.jobs.inspect_job import run_inspection  # noqa: E402
from saestudio.jobs.runner import JobTiming  # noqa: E402
from saestudio.settings import Settings  # noqa: E402
from saestudio.store import inspections  # noqa: E402
from saestudio.store.db import session_scope  # noqa: E402
from saestudio.store.jobstore import SqlJobStore  # noqa: E402
from saestudio.store.models import Inspection, utcnow  # noqa: E402

pytestmark = pytest.mark.integration
API = "/api/v1"


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, api_token=None)


def test_completed_run_is_inspected_indexed_and_served(settings: Settings) -> None:
    run = inspected_run(settings, inspect=False)
    store = SqlJobStore(settings.db_url, settings.data_dir)
    ins_id = store.queue_inspection(run, 512)
    assert ins_id is not None
    job = store.inspection_job(ins_id)
    assert job is not None and job.rows == (1024 - 512, 1024) and job.hook == "resid_post.3"
    assert store.claim("inspection", ins_id, "w1", 60.0)
    events = MemoryEventSink()
    status = run_inspection(ins_id, job, store.inspections, events, hostname="w1")
    assert status == "completed"
    with session_scope(settings.db_url) as s:
        row = inspections.get_inspection(s, ins_id)
        assert row.status == "completed" and row.progress == 1.0
        assert row.summary is not None and row.summary["sae"]["rows_read"] == 512
    with TestClient(create_app(settings)) as client:
        page = client.get(
            f"{API}/trainings/{run}/features", params={"sort": "max_activation", "order": "desc"}
        ).json()
        assert page["total"] == D_SAE
        best = page["items"][0]
        rec = client.get(f"{API}/trainings/{run}/features/{best['latent']}").json()
        top = rec["top"][0]
        assert rec["max_activation"] == pytest.approx(top["activation"], rel=1e-5)
        assert top["token"] and top["context"][top["position"]] == top["token"]
        assert 512 <= top["row"] < 1024  # the held-out end of the dataset
        assert rec["logits"] is None  # MiniLM is an encoder: no unembedding
        status_body = client.get(f"{API}/trainings/{run}/inspection").json()
        assert status_body["inspection"]["status"] == "completed"
        assert status_body["inspectable"] is True  # may be run again
        shown = status_body["inspection"]["summary"]["sae"]
        assert shown["dataset"] == "activations/demo"  # no server paths in the API
        assert not shown["sae"].startswith("/")


def test_a_completed_training_queues_its_inspection(settings: Settings) -> None:
    from api_helpers import sent_tasks

    from saestudio.jobs.celery_app import make_celery
    from saestudio.jobs.tasks import INSPECT_TASK, _queue_inspection

    run = inspected_run(settings, inspect=False)
    store = SqlJobStore(settings.db_url, settings.data_dir)
    _queue_inspection(make_celery(settings), store, run, 300)
    with session_scope(settings.db_url) as s:
        row = inspections.inspection_of(s, run)
        assert row is not None and (row.status, row.row_start, row.row_end) == ("queued", 724, 1024)
    assert sent_tasks(settings) == [(INSPECT_TASK, [row.id])]
    _queue_inspection(make_celery(settings), store, run, 0)  # inspect_rows 0: off
    assert len(sent_tasks(settings)) == 1


def test_stop_cancels_and_a_dead_worker_is_requeued(settings: Settings) -> None:
    run = inspected_run(settings, inspect=False)
    store = SqlJobStore(settings.db_url, settings.data_dir)
    ins_id = store.queue_inspection(run, 1024)
    assert ins_id is not None and store.claim("inspection", ins_id, "w1", 60.0)
    with session_scope(settings.db_url) as s:
        inspections.request_inspection_control(s, ins_id, "stop")
    job = store.inspection_job(ins_id)
    assert job is not None
    status = run_inspection(
        ins_id, job, store.inspections, MemoryEventSink(), hostname="w1",
        timing=JobTiming(poll_s=0), interrupt=threading.Event(),
    )  # fmt: skip
    assert status == "cancelled"
    with session_scope(settings.db_url) as s:
        assert inspections.get_inspection(s, ins_id).status == "cancelled"
        outcome = inspections.request_inspection_control(s, ins_id, "resume")
        assert outcome.enqueue and outcome.row.status == "queued"
    assert store.claim("inspection", ins_id, "w2", 60.0)
    with session_scope(settings.db_url) as s:  # w2 dies: its heartbeat stops
        row = s.get(Inspection, ins_id)
        assert row is not None
        row.heartbeat_at = utcnow() - timedelta(seconds=300)
    assert ("inspection", ins_id) in store.claim_stale(60.0)
    with session_scope(settings.db_url) as s:
        assert inspections.get_inspection(s, ins_id).status == "queued"


def test_labels_go_out_as_neuronpedia_explanations(settings: Settings) -> None:
    import gzip
    import io
    import json
    import zipfile

    run = inspected_run(settings, inspect=False)
    store = SqlJobStore(settings.db_url, settings.data_dir)
    ins_id = store.queue_inspection(run, 256)
    assert ins_id is not None and store.claim("inspection", ins_id, "w1", 60.0)
    job = store.inspection_job(ins_id)
    assert job is not None
    run_inspection(ins_id, job, store.inspections, MemoryEventSink(), hostname="w1")
    with TestClient(create_app(settings)) as client:
        url = f"{API}/trainings/{run}/features"
        client.put(f"{url}/5/label", json={"label": "python keywords"})
    with TestClient(create_app(settings)) as client:  # after a restart
        r = client.get(f"{url}/neuronpedia.zip")
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = zf.namelist()
    assert any("/features/" in n and n.endswith(".jsonl.gz") for n in names)
    assert any("/activations/" in n and n.endswith(".jsonl.gz") for n in names)
    explained = {}  # sae-dashboard's layout has no labels: they go out as explanations
    for n in names:
        if "/explanations/" in n:
            for line in gzip.decompress(zf.read(n)).decode().splitlines():
                e = json.loads(line)
                explained[int(e["index"])] = e["description"]
    assert explained == {5: "python keywords"}
