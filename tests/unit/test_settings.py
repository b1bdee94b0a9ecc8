"""One ``Settings`` reads the environment, job timing included (DESIGN.md §3.7, §3.12)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from saestudio.jobs.embedded import settings_env
from saestudio.settings import Settings


def test_job_timing_comes_from_saestudio_job_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("SAESTUDIO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SAESTUDIO_JOB_HEARTBEAT_S", "0.3")
    monkeypatch.setenv("SAESTUDIO_JOB_STALE_AFTER_S", "2")
    s = Settings()
    assert (s.job.heartbeat_s, s.job.stale_after_s, s.job.poll_s) == (0.3, 2.0, 0.5)
    assert s.data_dir == tmp_path.resolve()
    monkeypatch.setenv("SAESTUDIO_JOB_HEARTBEAT_S", "0")
    with pytest.raises(ValidationError, match="heartbeat_s"):
        Settings()


def test_a_worker_started_with_the_settings_env_sees_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """What the embedded worker's environment is made of: its ``get_settings()`` equals
    the API's settings, job timing included."""
    parent = Settings(data_dir=tmp_path, port=8123, job={"heartbeat_s": 0.25, "poll_s": 0})
    for key, value in settings_env(parent).items():
        monkeypatch.setenv(key, value)
    assert Settings() == parent.model_copy(update={"broker_url": parent.celery_broker,
                                                   "database_url": parent.db_url})  # fmt: skip
