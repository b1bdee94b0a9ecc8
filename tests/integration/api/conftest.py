"""Fixtures for the API tests: an app on a migrated database (``db_url``: SQLite and
PostgreSQL), a tmp data dir and a SQLite broker file under it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from saestudio.api.app import create_app
from saestudio.settings import Settings


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    data = tmp_path / "data"
    (data / "activations" / "demo").mkdir(parents=True)
    return Settings(data_dir=data, database_url=db_url, broker_url=None, api_token=None)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c
