"""Helpers the repository modules share: paging, paths, configs, conditional updates."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Generic, NamedTuple, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import CursorResult, Select, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from saestudio.store.models import Base
from saestudio.store.states import NameTaken, NotFound

T = TypeVar("T")
M = TypeVar("M", bound=Base)

MAX_PAGE = 1000
"""Largest page a list function returns, whatever ``limit`` says."""


class Page(NamedTuple, Generic[T]):
    """One page of a listing."""

    items: list[T]
    """The rows, newest first unless the function says otherwise."""
    total: int
    """Rows matching the filters across all pages."""


def relative_path(path: str, field: str = "path") -> str:
    """``path`` as a normalised relative POSIX path, or ValueError.

    The API resolves paths against the data dir (and refuses symlinks out); refusing
    absolute paths and ``..`` here too means a row can never point outside it
    (SPEC §4 erratum 8), whoever wrote it.
    """
    text = str(path).replace("\\", "/")
    if not text.strip() or PurePosixPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise ValueError(f"{field}: must be a path relative to the data dir, got {path!r}")
    parts = [p for p in PurePosixPath(text).parts if p != "."]
    if ".." in parts or not parts:
        raise ValueError(f"{field}: '..' and empty paths are refused, got {path!r}")
    return "/".join(parts)


def dump_config(config: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """A config as the JSON the column stores (pydantic models in JSON mode)."""
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    return dict(config)


def get_or_raise(session: Session, model: type[M], ident: int, what: str) -> M:
    row = session.get(model, ident)
    if row is None:
        raise NotFound(what, ident)
    return row


def refresh(session: Session, model: type[M], ident: int, what: str) -> M:
    """The row as the database has it now (after a Core-style UPDATE)."""
    row = session.get(model, ident, populate_existing=True)
    if row is None:
        raise NotFound(what, ident)
    return row


def conditional_update(
    session: Session, model: type[Base], ident: int, where: list[Any], values: dict[str, Any]
) -> bool:
    """``UPDATE … WHERE id = ident AND <where>``; True when a row matched.

    A compare-and-set: the check and the write are one statement, so the API and a
    worker racing on the same row cannot both win, on SQLite (whose reads before the
    first write run outside the transaction) as on PostgreSQL, without row locks.
    """
    table = cast(Any, model)
    stmt = (
        update(model)
        .where(table.id == ident, *where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], session.execute(stmt))
    return result.rowcount == 1


def paged(session: Session, stmt: Select[M], limit: int, offset: int) -> Page[M]:
    """Run ``stmt`` for one page and count all its matches."""
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must be non-negative")
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    items = session.scalars(stmt.limit(min(limit, MAX_PAGE)).offset(offset)).all()
    return Page(list(items), int(total or 0))


def add_unique(session: Session, row: Any, what: str, name: str) -> None:
    """Add and flush ``row`` (a model with a unique ``name``); a clash → :class:`NameTaken`.

    Checked with a SELECT first, so the usual clash leaves the caller's transaction
    intact. If a concurrent writer takes the name between check and insert, the
    IntegrityError rolls the session back (savepoints would keep it, but pysqlite's
    SAVEPOINT outside an explicit BEGIN commits on release); the request fails anyway.
    """
    model = type(row)
    with session.no_autoflush:  # the pending row must not be flushed by the check itself
        clash = session.scalar(
            select(model.id).where(model.name == name, model.id != (row.id or -1)).limit(1)
        )
    if clash is not None:
        raise NameTaken(what, name)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as e:
        session.rollback()
        raise NameTaken(what, name) from e


def check_changes(changes: Mapping[str, Any], allowed: Collection[str], what: str) -> None:
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: cannot update {', '.join(unknown)} (allowed: {sorted(allowed)})")


def dialect_insert(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT, which has ``on_conflict_do_update`` (SQLite ≥ 3.24 and PG)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"unsupported database {name!r}: use SQLite or PostgreSQL")


def status_filter(column: Any, status: str | Collection[str] | None) -> list[Any]:
    if status is None:
        return []
    if isinstance(status, str):
        return [column == status]
    return [column.in_(list(status))]
