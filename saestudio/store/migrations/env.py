"""Alembic environment for the studio's database.

The URL comes, first found: ``config.attributes["url"]`` (what
:func:`saestudio.store.migrate.upgrade` passes), ``-x url=...`` on the command line,
``sqlalchemy.url`` in alembic.ini, then ``Settings.db_url``. A caller may also hand an
open connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, text

from saestudio.store.db import make_engine, normalize_url
from saestudio.store.models import Base

# any 64-bit constant: serialises concurrent `upgrade` calls of several services on PG
MIGRATION_LOCK = 0x5AE5_7D10

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        from saestudio.settings import get_settings

        url = get_settings().db_url
    return normalize_url(url).render_as_string(hide_password=False)


def _options(connection: Connection | None) -> dict[str, Any]:
    sqlite = connection is not None and connection.dialect.name == "sqlite"
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        # SQLite cannot ALTER most things: later migrations copy-and-move tables
        "render_as_batch": sqlite,
    }


def run_offline() -> None:
    """Emit SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(
        url=_url(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(None),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection))
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # another service migrating at the same moment waits here, then finds the
            # version already at head (PG DDL is transactional: all or nothing)
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # foreign keys off: SQLite batch migrations drop and recreate tables
    engine = make_engine(_url(), foreign_keys=False, pool=False)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
