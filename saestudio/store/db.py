"""Engines and sessions from a URL.

SQLite is the embedded default and is written by two processes at once (the API and
the local Celery worker), so every SQLite connection is put in WAL mode (readers never
block the writer), waits on a locked database instead of failing (``busy_timeout``) and
enforces foreign keys (off by default in SQLite, and ``ON DELETE CASCADE`` relies on
them). PostgreSQL is reached through psycopg 3.

Repository functions never commit: the caller owns the transaction, normally through
:func:`session_scope`, so one request or one batch of metric lines is one commit.

pysqlite's default transaction handling is kept on purpose: it sends ``BEGIN`` only
before the first write, so a session that reads then writes takes the write lock at its
first write and waits on ``busy_timeout``, instead of failing at once with
``SQLITE_BUSY_SNAPSHOT`` when upgrading a read snapshot another writer has outdated.
Status changes are single conditional UPDATEs, so they need no read snapshot.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

BUSY_TIMEOUT_MS = 15_000
"""How long a SQLite writer waits for another writer before ``database is locked``."""


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://`` (and Heroku-style ``postgres://``) URLs get
    the psycopg 3 driver, the only PostgreSQL driver the studio depends on."""
    text = str(url) if isinstance(url, URL) else url
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://") :]
    parsed = make_url(text)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _clean(value: Any) -> Any:
    """NaN/Inf become null: PostgreSQL's JSON types refuse them, and a metric such as
    ``ce_loss_recovered`` is legitimately undefined (NaN) when ablation costs nothing."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _fallback(value: Any) -> Any:
    # numpy / torch scalars and arrays that slipped into a metrics line
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_dumps(value: Any) -> str:
    """The serializer every JSON column goes through (identical on SQLite and PG)."""
    return json.dumps(_clean(value), default=_fallback, allow_nan=False)


def make_engine(
    url: str | URL, *, foreign_keys: bool = True, pool: bool = True, echo: bool = False
) -> Engine:
    """A new engine for ``url`` (SQLite file or ``postgresql+psycopg://``).

    ``foreign_keys=False`` is for migrations only: SQLite's batch mode recreates tables,
    and with foreign keys on, dropping the old copy would cascade into child rows.
    ``pool=False`` (NullPool) suits short-lived uses such as migrations and forked workers.
    """
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "json_serializer": json_dumps}
    if not pool:
        kwargs["poolclass"] = NullPool
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # the API serves requests from a thread pool; pooled connections move threads
        kwargs["connect_args"] = {"check_same_thread": False}
        engine = create_engine(parsed, **kwargs)
        _sqlite_pragmas(engine, foreign_keys)
    else:
        # a pooled connection may have been cut (server restart, idle timeout)
        engine = create_engine(parsed, pool_pre_ping=True, **kwargs)
    return engine


def _sqlite_pragmas(engine: Engine, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            # WAL: the API reads while the worker writes; persistent per file, but cheap
            # to repeat and it covers databases created by something else.
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against crashes in WAL mode and avoids an fsync per commit
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        finally:
            cur.close()


_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}


def _default_url() -> str:
    from saestudio.settings import get_settings

    return get_settings().db_url


def get_engine(url: str | URL | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: ``Settings.db_url``), made once."""
    key = normalize_url(url or _default_url()).render_as_string(hide_password=False)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(key)
        return engine


def session_factory(url: str | URL | None = None) -> sessionmaker[Session]:
    """Sessions bound to :func:`get_engine`'s engine.

    ``expire_on_commit=False``: rows returned from a committed session stay readable, so
    an API route can serialise what a repository function returned after the commit.
    """
    engine = get_engine(url)
    key = engine.url.render_as_string(hide_password=False)
    with _lock:
        factory = _factories.get(key)
        if factory is None:
            factory = _factories[key] = sessionmaker(engine, expire_on_commit=False)
        return factory


@contextmanager
def session_scope(url: str | URL | None = None) -> Iterator[Session]:
    """One transaction: commit when the block ends, roll back if it raises."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _after_fork_in_child() -> None:
    # A Celery prefork child inherits the parent's pooled connections; using them from
    # two processes corrupts both. Drop them without closing (the parent still owns
    # them) and without the lock (another thread may have held it at fork time).
    for engine in list(_engines.values()):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def dispose_engines() -> None:
    """Close every cached engine's connections (tests; a process about to exit)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()
