"""``/trainings/{id}/checkpoints`` and the SAE download: list, best, delete, resume
from, export to SAELens, download as zip."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from saestudio.api.deps import CeleryDep, IdPath, SessionDep, SettingsDep
from saestudio.api.schemas import CheckpointPublic, ExportPublic, TrainingPublic
from saestudio.jobs.tasks import enqueue
from saestudio.settings import Settings
from saestudio.store import repo
from saestudio.store.models import Checkpoint, Training

router = APIRouter(prefix="/trainings/{training_id}", tags=["checkpoints"])


def _folder(settings: Settings, relative: str) -> Path:
    """A stored relative path inside the data dir (rows are relative by construction;
    checked again because a symlink may have appeared since)."""
    path = (settings.data_dir / relative).resolve()
    if not path.is_relative_to(settings.data_dir):
        raise HTTPException(400, detail=f"{relative!r} is outside the data directory")
    return path


SAE_FILES = ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors")
"""An SAELens folder; a run's export shares its folder with checkpoints and metrics."""


def _zip_response(
    folders: dict[str, Path], filename: str, only: tuple[str, ...] | None = None
) -> FileResponse:
    """Zip ``folders`` (arcname prefix → folder; with ``only``, just those top-level
    files) into a temp file, streamed back in chunks and deleted after sending (a
    checkpoint is too big to build in memory)."""
    fd, tmp = tempfile.mkstemp(suffix=".zip")
    os.close(fd)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for prefix, folder in folders.items():
            files = [folder / n for n in only] if only else sorted(folder.rglob("*"))
            for file in files:
                if file.is_file() and not file.is_symlink():
                    zf.write(file, f"{prefix}/{file.relative_to(folder).as_posix()}")
    return FileResponse(
        tmp,
        media_type="application/zip",
        filename=filename,
        background=BackgroundTask(os.unlink, tmp),
    )


@router.get("/checkpoints", response_model=list[CheckpointPublic])
def list_checkpoints(
    training_id: IdPath, session: SessionDep, sae: str | None = None
) -> list[Checkpoint]:
    repo.get_training(session, training_id)  # 404 for an unknown run
    return repo.list_checkpoints(session, training_id, sae=sae)


@router.get("/checkpoints/best", response_model=list[CheckpointPublic])
def best_checkpoints(
    training_id: IdPath, session: SessionDep, sae: str | None = None
) -> list[Checkpoint]:
    """The best checkpoint of each SAE in the run (lowest held-out loss)."""
    repo.get_training(session, training_id)
    return repo.best_checkpoints(session, training_id, sae=sae)


@router.delete("/checkpoints/{checkpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_checkpoint(
    training_id: IdPath,
    checkpoint_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    allow_best: bool = False,
) -> None:
    """Delete a checkpoint row and folder; the best one only with ``?allow_best=true``."""
    row = repo.get_checkpoint(session, checkpoint_id, training_id)
    folder = _folder(settings, row.path)
    repo.delete_checkpoint(session, checkpoint_id, training_id=training_id, allow_best=allow_best)
    session.commit()
    shutil.rmtree(folder, ignore_errors=True)


@router.post("/checkpoints/{checkpoint_id}/resume", response_model=TrainingPublic)
def resume_from(
    training_id: IdPath, checkpoint_id: IdPath, session: SessionDep, celery: CeleryDep
) -> Training:
    """Resume the (paused / stopped / failed) run from this checkpoint: later
    checkpoints and metric lines are dropped, as if the run had never gone past it."""
    ckpt = repo.get_checkpoint(session, checkpoint_id, training_id)
    outcome = repo.request_control(session, training_id, "resume")  # 409 if not allowed
    repo.delete_checkpoints_after(session, training_id, ckpt.step)
    repo.delete_metrics_after(session, training_id, ckpt.step)
    session.commit()
    if outcome.enqueue:
        enqueue(celery, "training", training_id)
    return outcome.row


@router.post("/checkpoints/{checkpoint_id}/export", response_model=ExportPublic)
def export(
    training_id: IdPath, checkpoint_id: IdPath, session: SessionDep, settings: SettingsDep
) -> ExportPublic:
    """Write the checkpoint as a SAELens folder at ``<run>/exports/step_<N>``."""
    from saestudio.training.export import export_checkpoint  # torch: only when exporting

    ckpt = repo.get_checkpoint(session, checkpoint_id, training_id)
    run = repo.get_training(session, training_id)
    source = _folder(settings, ckpt.path)
    out = _folder(settings, f"{run.out_dir}/exports/step_{ckpt.step}")
    try:
        written = export_checkpoint(source, out)
    except FileNotFoundError as e:
        raise HTTPException(404, detail=str(e)) from None
    return ExportPublic(
        checkpoint_id=checkpoint_id,
        path=written.resolve().relative_to(settings.data_dir).as_posix(),
    )


@router.get("/checkpoints/{checkpoint_id}/download")
def download_checkpoint(
    training_id: IdPath, checkpoint_id: IdPath, session: SessionDep, settings: SettingsDep
) -> FileResponse:
    """The checkpoint folder as a zip."""
    ckpt = repo.get_checkpoint(session, checkpoint_id, training_id)
    folder = _folder(settings, ckpt.path)
    if not folder.is_dir():
        raise HTTPException(404, detail=f"checkpoint {checkpoint_id}: folder is gone")
    return _zip_response(
        {f"step_{ckpt.step}": folder}, f"training{training_id}-step{ckpt.step}.zip"
    )


@router.get("/sae/download")
def download_sae(training_id: IdPath, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """The run's SAELens export(s) as a zip, one folder per SAE."""
    run = repo.get_training(session, training_id)
    folders = {label: _folder(settings, path) for label, path in (run.exports or {}).items()}
    folders = {label: f for label, f in folders.items() if f.is_dir()}
    if not folders:
        raise HTTPException(404, detail=f"training {training_id}: no SAE exported yet")
    return _zip_response(folders, f"training{training_id}-sae.zip", only=SAE_FILES)
