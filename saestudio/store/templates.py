"""Training templates: named (possibly partial) TrainConfig dumps the form loads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from saestudio.store._common import (
    Page,
    add_unique,
    check_changes,
    dump_config,
    get_or_raise,
    paged,
)
from saestudio.store.models import TrainingTemplate

WHAT = "template"
UPDATABLE = ("name", "description", "config", "favourite")


def create_template(
    session: Session,
    config: BaseModel | Mapping[str, Any],
    *,
    name: str,
    description: str = "",
    favourite: bool = False,
) -> TrainingTemplate:
    """Save a template; a taken name → :class:`NameTaken`."""
    row = TrainingTemplate(
        name=name, description=description, config=dump_config(config), favourite=favourite
    )
    add_unique(session, row, WHAT, name)
    return row


def get_template(session: Session, template_id: int) -> TrainingTemplate:
    """The template, or :class:`NotFound`."""
    return get_or_raise(session, TrainingTemplate, template_id, WHAT)


def get_template_by_name(session: Session, name: str) -> TrainingTemplate | None:
    return session.scalar(select(TrainingTemplate).where(TrainingTemplate.name == name))


def list_templates(
    session: Session, *, favourite: bool | None = None, limit: int = 50, offset: int = 0
) -> Page[TrainingTemplate]:
    """Favourites first, then by name."""
    stmt = select(TrainingTemplate)
    if favourite is not None:
        stmt = stmt.where(TrainingTemplate.favourite == favourite)
    stmt = stmt.order_by(TrainingTemplate.favourite.desc(), TrainingTemplate.name)
    return paged(session, stmt, limit, offset)


def update_template(session: Session, template_id: int, **changes: Any) -> TrainingTemplate:
    """Set ``name``, ``description``, ``config`` and/or ``favourite``."""
    check_changes(changes, UPDATABLE, WHAT)
    row = get_template(session, template_id)
    for key, value in changes.items():
        setattr(row, key, dump_config(value) if key == "config" else value)
    add_unique(session, row, WHAT, str(changes.get("name", row.name)))
    return row


def delete_templates(session: Session, template_ids: Sequence[int]) -> int:
    """Delete templates; returns how many existed."""
    stmt = delete(TrainingTemplate).where(TrainingTemplate.id.in_(list(template_ids)))
    return cast(CursorResult[Any], session.execute(stmt)).rowcount
