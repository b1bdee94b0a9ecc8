"""``/trainings``: create (and enqueue), list, read, rename, delete, control, retry,
metrics. Each route is a few repository calls; paths are confined by
:mod:`saestudio.api.paths`."""

from __future__ import annotations

import secrets
import shutil
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from saestudio.activations.store import DataError
from saestudio.api.deps import MAX_ID, CeleryDep, IdPath, IdQuery, SessionDep, SettingsDep
from saestudio.api.paths import PATH_REFUSED, data_path, model_source, slug, text_source
from saestudio.api.planning import ConfigProblem, TrainingPlan, plan
from saestudio.api.resolved import ResolvedValue, planned, read_resolved
from saestudio.api.schemas import (
    BulkDelete,
    BulkDeleted,
    ControlRequest,
    MetricPublic,
    PageOut,
    TrainingCreate,
    TrainingDetail,
    TrainingPublic,
    TrainingUpdate,
)
from saestudio.jobs.tasks import enqueue
from saestudio.settings import Settings
from saestudio.store import repo
from saestudio.store.models import Checkpoint, Training
from saestudio.training.config import TrainConfig

router = APIRouter(prefix="/trainings", tags=["trainings"])


def confined_config(config: TrainConfig, settings: Settings) -> dict[str, Any]:
    """The config as stored, every path and name under the path policy
    (:mod:`saestudio.api.paths`, 400 naming the field otherwise): ``activations`` /
    ``targets`` inside the data dir, an on-the-fly ``dataset`` text file inside it too,
    ``model`` a hub name or a folder under the model roots; local ones made absolute, so
    the worker reads what was checked whatever its cwd. ``out`` is not stored: the
    service decides the run folder (:func:`new_run`)."""
    data: dict[str, Any] = config.model_dump(mode="json", exclude={"out"})
    for field in ("activations", "targets"):
        if data.get(field):
            data[field] = data_path(settings, data[field], f"config.{field}")
    if data.get("dataset"):
        data["dataset"] = text_source(settings, data["dataset"], "config.dataset")
    if data.get("model"):
        data["model"] = model_source(settings, data["model"], "config.model")
    return data


def run_folder(name: str) -> str:
    """A new run's folder, relative to the data dir: ``runs/<UTC time>-<slug>-<random>``,
    decided before the row exists (the time orders folders as the runs were made; the
    random part keeps two runs created in the same second apart)."""
    return f"runs/{datetime.now(UTC):%Y%m%d-%H%M%S}-{slug(name)}-{secrets.token_hex(3)}"


def new_run(
    session: Session,
    config: dict[str, Any],
    name: str,
    *,
    dataset_id: IdQuery = None,
    parent_id: IdQuery = None,
) -> Training:
    """Insert a queued run in a new folder of its own (:func:`run_folder`, stored once as
    ``out_dir``; a body's ``out`` is ignored: the service decides where runs live)."""
    cfg = TrainConfig.model_validate(config)
    return repo.create_training(
        session,
        cfg,
        name=name,
        out_dir=run_folder(name),
        dataset_id=dataset_id,
        parent_id=parent_id,
    )


def _send(session: Session, celery: CeleryDep, row: Training) -> None:
    # commit first: a worker that receives the task must find the row queued
    session.commit()
    enqueue(celery, "training", row.id)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TrainingPublic,
    responses=PATH_REFUSED,
)
def create_training(
    body: TrainingCreate, session: SessionDep, settings: SettingsDep, celery: CeleryDep
) -> Training:
    """Queue a run and send its task (a worker picks it up when one runs). The config is
    checked against its data first (as ``/trainings/validate`` does): 422 naming the
    field when it cannot train; 404 for an unknown ``dataset_id``."""
    config = confined_config(body.config, settings)
    checked_plan(config)
    if body.dataset_id is not None:
        repo.get_dataset(session, body.dataset_id)  # 404, not a foreign-key error
    name = body.name or f"{body.config.sae.architecture}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    row = new_run(session, config, name, dataset_id=body.dataset_id)
    _send(session, celery, row)
    return row


def checked_plan(config: dict[str, Any]) -> TrainingPlan:
    """:func:`~saestudio.api.planning.plan` of a stored config; a problem is a 422 shaped
    like FastAPI's own (``loc`` under ``body``)."""
    try:
        return plan(TrainConfig.model_validate(config))
    except ConfigProblem as e:
        raise RequestValidationError(
            [{"loc": ("body", *e.loc), "msg": e.msg, "type": "value_error"}]
        ) from e
    except DataError as e:
        raise RequestValidationError(
            [{"loc": ("body", "config", "activations"), "msg": str(e), "type": "value_error"}]
        ) from e


@router.post("/validate", response_model=TrainingPlan, responses=PATH_REFUSED)
def validate_training(body: TrainingCreate, settings: SettingsDep) -> TrainingPlan:
    """Check a config without queueing anything: 422 with field-level messages, else
    the data's widths, the hyperparameters after architecture defaults, and estimated
    size, memory and time (what the web form shows as the user types)."""
    return checked_plan(confined_config(body.config, settings))


@router.get("", response_model=PageOut[TrainingPublic])
def list_trainings(
    session: SessionDep,
    status: Annotated[list[str] | None, Query()] = None,
    dataset_id: IdQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    """Newest first; ``?status=running&status=queued`` filters."""
    page = repo.list_trainings(
        session, status=status, dataset_id=dataset_id, limit=limit, offset=offset
    )
    return {"items": page.items, "total": page.total, "limit": limit, "offset": offset}


@router.get("/{training_id}", response_model=TrainingDetail)
def get_training(training_id: IdPath, session: SessionDep, settings: SettingsDep) -> TrainingDetail:
    """The run, with the hyperparameters its SAEs really use (``resolved``: read from
    each SAE's latest checkpoint; before it has one, planned from the config and data)."""
    row = repo.get_training(session, training_id)
    detail = TrainingDetail.model_validate(row)
    # the stored config has no ``out``: the service keeps the run's folder in out_dir
    found = planned({**row.config, "out": row.out_dir}) or {}
    found.update(_resolved(settings, repo.list_checkpoints(session, training_id)) or {})
    detail.resolved = found or None
    return detail


def _resolved(
    settings: Settings, checkpoints: list[Checkpoint]
) -> dict[str, dict[str, ResolvedValue]] | None:
    latest = {c.sae: c for c in checkpoints}  # listed by SAE, then step: the last wins
    out: dict[str, dict[str, ResolvedValue]] = {}
    for sae, c in latest.items():
        folder = (settings.data_dir / c.path).resolve()
        # stored relative to the data dir; re-checked, a symlink may have appeared since
        if folder.is_relative_to(settings.data_dir.resolve()):
            found = read_resolved(folder)
            if found is not None:
                out[sae] = found
    return out or None


@router.patch("/{training_id}", response_model=TrainingPublic)
def update_training(training_id: IdPath, body: TrainingUpdate, session: SessionDep) -> Training:
    """Rename (the folder keeps its name: it is only an address)."""
    return repo.update_training(session, training_id, name=body.name)


def _remove_folders(settings: Settings, rows: list[Training]) -> None:
    for row in rows:
        folder = settings.data_dir / row.out_dir
        # out_dir is relative and checked at creation; re-check before deleting anything
        if folder.resolve().is_relative_to(settings.data_dir) and folder != settings.data_dir:
            shutil.rmtree(folder, ignore_errors=True)


@router.delete("/{training_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_training(training_id: IdPath, session: SessionDep, settings: SettingsDep) -> None:
    """Delete the run, its rows and its folder; 409 while it runs (stop it first)."""
    repo.get_training(session, training_id)  # 404 for an unknown id
    rows = repo.delete_trainings(session, [training_id])
    session.commit()
    _remove_folders(settings, rows)


@router.post("/bulk-delete", response_model=BulkDeleted)
def bulk_delete(body: BulkDelete, session: SessionDep, settings: SettingsDep) -> BulkDeleted:
    """Delete several runs at once (unknown ids are skipped; any running one → 409)."""
    rows = repo.delete_trainings(session, body.ids)
    session.commit()
    _remove_folders(settings, rows)
    return BulkDeleted(deleted=[r.id for r in rows])


@router.post("/{training_id}/control", response_model=TrainingPublic)
def control(
    training_id: IdPath, body: ControlRequest, session: SessionDep, celery: CeleryDep
) -> Training:
    """pause / resume / stop / stop_and_finalize; 409 when not allowed in the current
    state. A resume (or anything that puts the run back in the queue) sends a task."""
    outcome = repo.request_control(session, training_id, body.action)
    if outcome.enqueue:
        _send(session, celery, outcome.row)
    return outcome.row


@router.post(
    "/{training_id}/retry",
    status_code=status.HTTP_201_CREATED,
    response_model=TrainingPublic,
    responses=PATH_REFUSED,
)
def retry(
    training_id: IdPath, session: SessionDep, settings: SettingsDep, celery: CeleryDep
) -> Training:
    """A new run with the same config, ``parent_id`` pointing at this one (its paths
    checked again: 400 when one now points outside the path policy)."""
    old = repo.get_training(session, training_id)
    # re-checked: a symlink may have been pointed elsewhere since the first run
    config = confined_config(TrainConfig.model_validate(old.config), settings)
    row = new_run(session, config, old.name, dataset_id=old.dataset_id, parent_id=old.id)
    _send(session, celery, row)
    return row


@router.get("/{training_id}/metrics", response_model=list[MetricPublic])
def get_metrics(
    training_id: IdPath,
    session: SessionDep,
    start_step: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    end_step: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    sae: str | None = None,
    kind: Annotated[list[str] | None, Query()] = None,
) -> list[Any]:
    """Metric lines with ``start_step <= step <= end_step``, in step order."""
    repo.get_training(session, training_id)  # 404 for an unknown id
    return repo.metrics(
        session,
        training_id,
        start_step=start_step,
        end_step=end_step,
        limit=limit,
        sae=sae,
        kind=kind,
    )
