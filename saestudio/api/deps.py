"""FastAPI dependencies as ``Annotated`` aliases: the settings, one DB session per
request, and the Celery app used to *send* tasks (no worker needed for that)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Path, Query, Request
from sqlalchemy.orm import Session

from saestudio.jobs.celery_app import make_celery
from saestudio.settings import Settings
from saestudio.store.db import session_scope
from saestudio.store.models import MAX_ID


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with (not the environment: tests pass their own)."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """One transaction per request: commit on success, roll back on error."""
    with session_scope(settings.db_url) as session:
        yield session


# scope="function": commit before the response is sent, so a client that sees 201 and
# asks again (or a worker that receives the task) sees the row
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_celery(request: Request) -> Celery:
    """One Celery app per API app, made on first use. ``send_task`` only writes to the
    broker (a row in the SQLite broker file by default): no worker has to be running."""
    celery: Celery | None = getattr(request.app.state, "celery", None)
    if celery is None:
        celery = request.app.state.celery = make_celery(request.app.state.settings)
    return celery


CeleryDep = Annotated[Celery, Depends(get_celery)]


IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
