"""``/trainings/{id}/inspection`` and ``/trainings/{id}/features``: a run's feature
inspection (queue, progress, stop), its latents (sorted, filtered, searched, paged),
one latent's full record, labels, the exports (latents.jsonl and Neuronpedia, labels
included) and the prompt search. Thin routes over :mod:`saestudio.store.inspections`,
:mod:`saestudio.store.labels` and the files the inspection wrote."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from saestudio.activations.manifest import Manifest, open_activation_dataset
from saestudio.api.deps import MAX_ID, CeleryDep, IdPath, SessionDep, SettingsDep
from saestudio.api.feature_schemas import (
    NO_NUL,
    FeaturesStatus,
    InspectionControl,
    InspectionCreate,
    InspectionPublic,
    LabelIn,
    LabelPublic,
    LatentPage,
    LatentRecord,
    LatentSummary,
    PromptResult,
    PromptSearch,
)
from saestudio.api.paths import model_source
from saestudio.api.prompt_search import ModelUnavailable, TooLong, encode_prompt, warm
from saestudio.jobs.inspect_job import LATENTS_FILE, read_record
from saestudio.jobs.tasks import enqueue
from saestudio.settings import Settings
from saestudio.store import inspections, labels, repo
from saestudio.store.jobstore import inspection_rows
from saestudio.store.labels import LatentFilter, LatentRow, LatentSort
from saestudio.store.models import Inspection, Training

router = APIRouter(prefix="/trainings/{training_id}", tags=["features"])
LatentPath = Annotated[int, PathParam(ge=0, le=MAX_ID, description="Latent index.")]


def _inside(settings: Settings, relative: str) -> Path:
    path = (settings.data_dir / relative).resolve()
    if not path.is_relative_to(settings.data_dir):
        raise HTTPException(400, detail=f"{relative!r} is outside the data directory")
    return path


def _why_not(settings: Settings, run: Training) -> str | None:
    if run.status != "completed" or not run.exports:
        return f"training {run.id} is {run.status}: its SAEs are inspected once it completes"
    if not run.config.get("activations"):
        return "an on-the-fly run (model and text, no activation dataset) is not inspected"
    if inspection_rows(settings.data_dir, run, 1) is None:
        return "its activations are not an activation dataset with token ids"
    return None


def _sae(run: Training, sae: str | None) -> str:
    """The SAE label asked for (default the run's first), or 404 naming ``sae``."""
    names = list(run.exports or {})
    if sae is None and names:
        return names[0]
    if sae not in names:
        raise HTTPException(
            404, detail=f"sae: {sae!r} is not an SAE of training {run.id} (it has {names})"
        )
    return sae


def _done(session: Session, run: Training) -> Inspection:
    """The run's completed inspection, or 404 / 409 saying what there is instead."""
    found = inspections.inspection_of(session, run.id)
    if found is None:
        raise HTTPException(404, detail=f"training {run.id} has no inspection")
    if found.status != "completed":
        raise HTTPException(
            409, detail=f"training {run.id}'s inspection is {found.status} ({found.progress:.0%})"
        )
    return found


def _summary(row: LatentRow) -> LatentSummary:
    a, lab = row
    return LatentSummary(
        latent=a.latent,
        density=a.density,
        mean_activation=a.mean_activation,
        max_activation=a.max_activation,
        top_tokens=list(a.top_tokens),
        label=lab.label if lab else None,
        note=lab.note if lab else None,
    )


def _check_latent(run: Training, latent: int) -> None:
    if run.d_sae is not None and latent >= run.d_sae:
        raise HTTPException(
            404, detail=f"latent: {latent} is out of range (the SAEs have {run.d_sae} latents)"
        )


# ---- the inspection job -------------------------------------------------------------------


def _public(settings: Settings, row: Inspection) -> InspectionPublic:
    """The row as the API shows it: the summaries' folders relative to the data dir (a
    client has no business with the server's absolute paths)."""
    out = InspectionPublic.model_validate(row)
    if out.summary:
        root = settings.data_dir.as_posix().rstrip("/") + "/"
        out.summary = {
            sae: {k: v[len(root):] if isinstance(v, str) and v.startswith(root) else v
                  for k, v in fields.items()}
            for sae, fields in out.summary.items()
        }  # fmt: skip
    return out


@router.get("/inspection", response_model=FeaturesStatus)
def inspection_status(
    training_id: IdPath, session: SessionDep, settings: SettingsDep
) -> FeaturesStatus:
    """The run's inspection (status, progress, per-SAE summaries) and whether one can be
    queued. Once it is complete the run's model starts loading in the background, so the
    tab's first prompt search does not wait for it."""
    run = repo.get_training(session, training_id)
    found = inspections.inspection_of(session, run.id)
    why = _why_not(settings, run)
    busy = found is not None and found.status in ("queued", "running")
    if found is not None and found.status == "completed":
        with contextlib.suppress(HTTPException, OSError, ValueError):
            warm(_prompt_manifest(settings, run))
    return FeaturesStatus(
        inspection=_public(settings, found) if found else None,
        saes=list(run.exports or {}),
        inspectable=why is None and not busy,
        why_not=why,
    )


@router.post("/inspection", status_code=status.HTTP_201_CREATED, response_model=InspectionPublic)
def queue_inspection(
    training_id: IdPath,
    body: InspectionCreate,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> Inspection:
    """Inspect the run's SAEs (again) over the last ``rows`` rows of its dataset; 409
    when it cannot be inspected (not completed, on-the-fly) or is being inspected."""
    run = repo.get_training(session, training_id)
    why = _why_not(settings, run)
    if why:
        raise HTTPException(409, detail=why)
    span = inspection_rows(settings.data_dir, run, body.rows or settings.inspect_rows)
    assert span is not None  # _why_not checked it
    row = inspections.create_inspection(
        session, run.id, path=f"{run.out_dir}/inspection", row_start=span[0], row_end=span[1]
    )
    session.commit()
    enqueue(celery, "inspection", row.id)
    return row


@router.post("/inspection/control", response_model=InspectionPublic)
def control_inspection(
    training_id: IdPath, body: InspectionControl, session: SessionDep, celery: CeleryDep
) -> Inspection:
    """``stop`` a queued or running inspection, or ``resume`` a stopped or failed one."""
    repo.get_training(session, training_id)
    found = inspections.inspection_of(session, training_id)
    if found is None:
        raise HTTPException(404, detail=f"training {training_id} has no inspection")
    outcome = inspections.request_inspection_control(session, found.id, body.action)
    if outcome.enqueue:
        session.commit()
        enqueue(celery, "inspection", found.id)
    return outcome.row


# ---- latents ------------------------------------------------------------------------------


@router.get("/features", response_model=LatentPage)
def list_latents(
    training_id: IdPath,
    session: SessionDep,
    sae: str | None = None,
    sort: LatentSort = "latent",
    order: Literal["asc", "desc"] = "asc",
    filter: LatentFilter = "all",
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> LatentPage:
    """A page of one SAE's latents. ``q`` matches a top token, a label or note, or a
    latent number; ``filter``: alive, dead (never fired on the inspected rows), dense
    (> 10 % of rows), labelled."""
    run = repo.get_training(session, training_id)
    label = _sae(run, sae)
    done = _done(session, run)
    page = labels.list_latents(
        session, done.id, run.id, label, sort=sort, descending=order == "desc",
        filter=filter, q=q, limit=limit, offset=offset,
    )  # fmt: skip
    items = [_summary(r) for r in page.items]
    return LatentPage(sae=label, items=items, total=page.total, limit=limit, offset=offset)


def _labelled_lines(path: Path, marks: dict[int, Any]) -> Iterator[bytes]:
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            mark = marks.get(int(rec["latent"]))
            rec["label"] = mark.label if mark else None
            rec["note"] = mark.note if mark else None
            yield (json.dumps(rec, separators=(",", ":")) + "\n").encode()


@router.get(
    "/features/latents.jsonl",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
def export_latents(
    training_id: IdPath, session: SessionDep, settings: SettingsDep, sae: str | None = None
) -> StreamingResponse:
    """One SAE's ``latents.jsonl`` with each latent's ``label`` and ``note`` added."""
    run = repo.get_training(session, training_id)
    label = _sae(run, sae)
    done = _done(session, run)
    path = _inside(settings, f"{done.path}/{label}/{LATENTS_FILE}")
    marks = labels.labels_of(session, run.id, label)
    return StreamingResponse(
        _labelled_lines(path, marks),
        media_type="application/x-ndjson",
        headers={"content-disposition": f'attachment; filename="{label}-latents.jsonl"'},
    )


@router.get(
    "/features/neuronpedia.zip",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def export_neuronpedia(
    training_id: IdPath, session: SessionDep, settings: SettingsDep, sae: str | None = None
) -> FileResponse:
    """One SAE's features in Neuronpedia's upload layout, labels as explanations."""
    from saestudio.features import write_neuronpedia

    run = repo.get_training(session, training_id)
    label = _sae(run, sae)
    done = _done(session, run)
    folder = _inside(settings, f"{done.path}/{label}")
    marks = {k: v.label for k, v in labels.labels_of(session, run.id, label).items()}
    work = Path(tempfile.mkdtemp(prefix="neuronpedia-"))
    try:
        write_neuronpedia(folder, work / "out", labels=marks)
        fd, tmp = tempfile.mkstemp(suffix=".zip")
        os.close(fd)
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for file in sorted((work / "out").rglob("*")):
                if file.is_file():
                    zf.write(file, f"{label}/{file.relative_to(work / 'out').as_posix()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return FileResponse(
        tmp,
        media_type="application/zip",
        filename=f"{label}-neuronpedia.zip",
        background=BackgroundTask(os.unlink, tmp),
    )


@router.get("/features/{latent}", response_model=LatentRecord)
def get_latent(
    training_id: IdPath,
    latent: LatentPath,
    session: SessionDep,
    settings: SettingsDep,
    sae: str | None = None,
) -> LatentRecord:
    """One latent's full record (statistics, histogram, top and quantile examples, logit
    lens where the model has an unembedding) with its label; 404 naming ``latent`` when
    it is out of range."""
    run = repo.get_training(session, training_id)
    label = _sae(run, sae)
    _check_latent(run, latent)
    done = _done(session, run)
    row = labels.get_latent(session, done.id, run.id, label, latent)
    rec = read_record(_inside(settings, f"{done.path}/{label}/{LATENTS_FILE}"), row.latent.offset)
    return LatentRecord(
        **_summary(row).model_dump(),
        sae=label,
        histogram=rec.get("histogram"),
        top=rec.get("top") or [],
        quantiles=rec.get("quantiles") or [],
        logits=rec.get("logits"),
    )


@router.put("/features/{latent}/label", response_model=LabelPublic)
def set_label(
    training_id: IdPath,
    latent: LatentPath,
    body: LabelIn,
    session: SessionDep,
    sae: str | None = None,
) -> Any:
    """Name a latent (and note why); replaces its earlier label."""
    run = repo.get_training(session, training_id)
    label = _sae(run, sae)
    _check_latent(run, latent)
    return labels.set_label(session, run.id, label, latent, body.label.strip(), body.note)


@router.delete("/features/{latent}/label", status_code=status.HTTP_204_NO_CONTENT)
def clear_label(
    training_id: IdPath, latent: LatentPath, session: SessionDep, sae: str | None = None
) -> None:
    """Remove a latent's label and note (removing none is not an error)."""
    run = repo.get_training(session, training_id)
    labels.clear_label(session, run.id, _sae(run, sae), latent)


# ---- prompt search ------------------------------------------------------------------------


def _prompt_manifest(settings: Settings, run: Training) -> Manifest:
    """The run's dataset manifest, its model confined by the model policy: the model the
    dataset names loads here, in the API process, under the same rule as a request naming
    a model (a hub name, or a folder under the model roots), else 400."""
    source = run.config.get("activations")
    if not source:
        raise HTTPException(409, detail="model: an on-the-fly run has no dataset manifest")
    manifest = open_activation_dataset(_inside(settings, str(source)))
    return manifest.model_copy(update={"model": model_source(settings, manifest.model, "model")})


@router.post("/features/search", response_model=PromptResult)
def prompt_search(
    training_id: IdPath, body: PromptSearch, session: SessionDep, settings: SettingsDep
) -> PromptResult:
    """Which latents fire on each token of a text: the run's model and SAE run here, in
    the API process. 422 naming ``text`` past ``Settings.prompt_tokens`` tokens; 400
    naming ``model`` when the dataset's model folder is outside the model roots, 409 when
    the model cannot be loaded on this server (a hub name while offline)."""
    run = repo.get_training(session, training_id)
    label = _sae(run, body.sae)
    manifest = _prompt_manifest(settings, run)
    folder = _inside(settings, (run.exports or {})[label])
    hooks = list(run.config.get("hook") or [])
    try:
        enc = encode_prompt(
            manifest, folder, hooks[0] if len(hooks) == 1 else None, body.text,
            settings.prompt_tokens,
        )  # fmt: skip
    except TooLong as e:
        raise RequestValidationError(
            [{"loc": ("body", "text"), "msg": str(e), "type": "value_error"}]
        ) from e
    except ModelUnavailable as e:
        raise HTTPException(409, detail=str(e)) from e
    return _prompt_result(session, run.id, label, enc, body.top)


def _prompt_result(
    session: Session, training_id: int, sae: str, enc: Any, top: int
) -> PromptResult:
    import torch

    z = enc.z  # [tokens, d_sae]
    tokens = []
    for i, tok in enumerate(enc.tokens):
        fired = (z[i] > 0).nonzero().squeeze(1)
        vals = z[i, fired]
        order = torch.argsort(vals, descending=True)[:top]
        tokens.append(
            {
                "index": i,
                "token": tok,
                "latents": [{"latent": int(fired[j]), "activation": float(vals[j])} for j in order],
            }
        )
    peak = z.max(dim=0).values if len(enc.tokens) else torch.zeros(z.shape[1])
    strongest = [int(i) for i in torch.argsort(peak, descending=True)[:50] if peak[i] > 0]
    marks = labels.labels_of(session, training_id, sae)
    latents = [
        {
            "latent": i,
            "max_activation": float(peak[i]),
            "tokens_fired": int((z[:, i] > 0).sum()),
            "activations": [round(float(v), 4) for v in z[:, i]],
            "label": marks[i].label if i in marks else None,
        }
        for i in strongest
    ]
    return PromptResult.model_validate(
        {"sae": sae, "tokens": tokens, "latents": latents, "seconds": enc.seconds}
    )
