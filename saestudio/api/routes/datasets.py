"""``/activation-datasets``: extraction jobs — create (and enqueue), list, read, control
(pause / resume / stop), delete (one or in bulk)."""

from __future__ import annotations

import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from saestudio.api.deps import MAX_ID, CeleryDep, IdPath, SessionDep, SettingsDep
from saestudio.api.paths import (
    PATH_REFUSED,
    folder_below,
    model_source,
    safe_name,
    text_source,
)
from saestudio.api.schemas import (
    BulkDelete,
    BulkDeleted,
    DatasetControlRequest,
    DatasetCreate,
    DatasetPublic,
    PageOut,
)
from saestudio.jobs.tasks import enqueue
from saestudio.settings import Settings
from saestudio.store import repo
from saestudio.store.models import ActivationDataset

router = APIRouter(prefix="/activation-datasets", tags=["activation-datasets"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses=PATH_REFUSED,
)
def create_dataset(
    body: DatasetCreate, session: SessionDep, settings: SettingsDep, celery: CeleryDep
) -> ActivationDataset:
    """Queue an extraction into ``out`` and send its task. Paths follow the path policy
    (:mod:`saestudio.api.paths`, 400 naming the field): ``out`` a folder below the data
    dir, a local text ``dataset`` inside it (hub ids and ``demo:`` pass), ``model`` a hub
    name or a folder under the model roots."""
    name = safe_name(body.name)
    config: dict[str, Any] = body.config.model_dump(mode="json")
    path = folder_below(settings, body.config.out, "config.out")
    config["out"] = path
    config["dataset"] = text_source(settings, body.config.dataset, "config.dataset")
    config["model"] = model_source(settings, body.config.model, "config.model")
    row = repo.create_dataset(session, config, name=name, path=path)
    # commit first: a worker that receives the task must find the row
    session.commit()
    enqueue(celery, "extraction", row.id)
    return row


@router.get("", response_model=PageOut[DatasetPublic])
def list_datasets(
    session: SessionDep,
    status: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    page = repo.list_datasets(session, status=status, limit=limit, offset=offset)
    return {"items": page.items, "total": page.total, "limit": limit, "offset": offset}


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset_id: IdPath, session: SessionDep) -> ActivationDataset:
    return repo.get_dataset(session, dataset_id)


@router.post("/{dataset_id}/control", response_model=DatasetPublic)
def control_dataset(
    dataset_id: IdPath, body: DatasetControlRequest, session: SessionDep, celery: CeleryDep
) -> ActivationDataset:
    """pause / resume / stop an extraction; 409 when not allowed in its state. A paused or
    stopped extraction keeps its stored shards, and a resume continues after them."""
    outcome = repo.request_dataset_control(session, dataset_id, body.action)
    if outcome.enqueue:
        session.commit()  # a worker that receives the task must find the row queued
        enqueue(celery, "extraction", outcome.row.id)
    return outcome.row


def _remove_folders(settings: Settings, rows: list[ActivationDataset]) -> None:
    for row in rows:
        folder = (settings.data_dir / row.path).resolve()
        # path is relative and checked at creation; re-check before deleting anything
        if folder.is_relative_to(settings.data_dir) and folder != settings.data_dir:
            shutil.rmtree(folder, ignore_errors=True)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: IdPath, session: SessionDep, settings: SettingsDep) -> None:
    """Delete the row and its folder; 409 while extracting (stop it first)."""
    repo.get_dataset(session, dataset_id)  # 404 for an unknown id
    rows = repo.delete_datasets(session, [dataset_id])
    session.commit()
    _remove_folders(settings, rows)


@router.post("/bulk-delete", response_model=BulkDeleted)
def bulk_delete(body: BulkDelete, session: SessionDep, settings: SettingsDep) -> BulkDeleted:
    """Delete several (unknown ids are skipped; any extracting one → 409)."""
    rows = repo.delete_datasets(session, body.ids)
    session.commit()
    _remove_folders(settings, rows)
    return BulkDeleted(deleted=[r.id for r in rows])
