"""Real databases for integration tests: a fresh SQLite file and a fresh PostgreSQL
schema, so every suite that takes ``db_url`` (or ``new_database``) runs on both.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, database ``test``; user
``postgres``, else ``root``), or ``SAESTUDIO_TEST_PG_URL``. Each test session makes
uniquely named schemas and drops them at the end, so repeated and parallel runs do not
collide. ``SAESTUDIO_TEST_NO_PG=1`` skips the PostgreSQL half; otherwise a missing
server fails the tests (CI has one).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from saestudio.store.db import dispose_engines, get_engine
from saestudio.store.migrate import upgrade
from saestudio.store.models import Base

PG_USERS = ("postgres", "root")
NO_PG = os.environ.get("SAESTUDIO_TEST_NO_PG") == "1"


def _pg_admin_url() -> URL:
    """The first PostgreSQL URL that answers; pytest.fail when none does."""
    given = os.environ.get("SAESTUDIO_TEST_PG_URL")
    candidates = (
        [given] if given else [f"postgresql+psycopg://{u}@127.0.0.1:5432/test" for u in PG_USERS]
    )
    errors = []
    for candidate in candidates:
        url = make_url(candidate).set(drivername="postgresql+psycopg")
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return url
        except Exception as e:  # any failure: try the next user, then report them all
            errors.append(f"{url.render_as_string()}: {e}")
        finally:
            engine.dispose()
    pytest.fail(
        "PostgreSQL is required for the store tests (set SAESTUDIO_TEST_NO_PG=1 to skip):\n"
        + "\n".join(errors)
    )


def _run_admin(url: URL, sql: str) -> None:
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each database-backed test runs once per backend."""
    if request.param == "postgresql" and NO_PG:
        pytest.skip("SAESTUDIO_TEST_NO_PG=1")
    return str(request.param)


@pytest.fixture(scope="session")
def new_database(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], str]]:
    """Makes empty databases (SQLite file / PG schema) on demand; drops them at the end."""
    admin = _pg_admin_url() if backend == "postgresql" else None
    schemas: list[str] = []

    def make() -> str:
        if admin is None:
            path: Path = tmp_path_factory.mktemp("db") / "studio.db"
            return f"sqlite:///{path}"
        schema = f"saestudio_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
        _run_admin(admin, f'CREATE SCHEMA "{schema}"')
        schemas.append(schema)
        # unqualified names (tables, alembic_version) resolve into this schema only
        url = admin.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    yield make
    dispose_engines()  # idle pooled connections would hold the schemas open
    for schema in schemas:
        assert admin is not None
        _run_admin(admin, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def migrated_url(new_database: Callable[[], str]) -> str:
    """One database per backend for the session, migrated to head once."""
    url = new_database()
    upgrade(url)
    return url


@pytest.fixture
def db_url(migrated_url: str) -> str:
    """The migrated database, emptied before the test."""
    with get_engine(migrated_url).begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    return migrated_url
