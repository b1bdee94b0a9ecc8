"""``/templates``: saved training configs — CRUD, export as a JSON list, import one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from saestudio.api.deps import MAX_ID, IdPath, SessionDep, SettingsDep
from saestudio.api.paths import PATH_REFUSED, safe_name
from saestudio.api.schemas import (
    BulkDelete,
    ImportResult,
    PageOut,
    TemplateCreate,
    TemplatePublic,
    TemplateUpdate,
)
from saestudio.store import repo
from saestudio.store.models import TrainingTemplate

router = APIRouter(prefix="/templates", tags=["templates"])

_IMPORT = TypeAdapter(list[TemplateCreate])


@router.get("/export", response_model=list[TemplateCreate])
def export_templates(session: SessionDep) -> list[TrainingTemplate]:
    """Every template, in the shape ``POST /templates/import`` takes back."""
    return repo.list_templates(session, limit=1000).items


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it exceeds ``limit`` bytes (never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, detail=f"body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, detail=f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _import(session: Session, items: list[TemplateCreate]) -> ImportResult:
    created, skipped = [], []
    for item in items:
        if repo.get_template_by_name(session, item.name) is not None:
            skipped.append(item.name)  # never overwrite a local template silently
            continue
        repo.create_template(
            session,
            item.config,
            name=item.name,
            description=item.description,
            favourite=item.favourite,
        )
        created.append(item.name)
    return ImportResult(created=created, skipped=skipped)


@router.post("/import", response_model=ImportResult, responses=PATH_REFUSED)
async def import_templates(
    request: Request, session: SessionDep, settings: SettingsDep
) -> ImportResult:
    """Import a JSON list (as exported); names already present are skipped. The body is
    limited to ``max_upload_mb`` (413 beyond)."""
    raw = await _read_limited(request, settings.max_upload_mb * 1024 * 1024)
    try:
        items = _IMPORT.validate_json(raw)
    except ValidationError as e:
        raise HTTPException(
            422, detail=e.errors(include_url=False, include_context=False, include_input=False)
        ) from None
    for item in items:
        safe_name(item.name)
    return await run_in_threadpool(_import, session, items)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TemplatePublic,
    responses=PATH_REFUSED,
)
def create_template(body: TemplateCreate, session: SessionDep) -> TrainingTemplate:
    """409 when the name is taken."""
    return repo.create_template(
        session,
        body.config,
        name=safe_name(body.name),
        description=body.description,
        favourite=body.favourite,
    )


@router.get("", response_model=PageOut[TemplatePublic])
def list_templates(
    session: SessionDep,
    favourite: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    page = repo.list_templates(session, favourite=favourite, limit=limit, offset=offset)
    return {"items": page.items, "total": page.total, "limit": limit, "offset": offset}


@router.get("/{template_id}", response_model=TemplatePublic)
def get_template(template_id: IdPath, session: SessionDep) -> TrainingTemplate:
    return repo.get_template(session, template_id)


@router.patch("/{template_id}", response_model=TemplatePublic, responses=PATH_REFUSED)
def update_template(
    template_id: IdPath, body: TemplateUpdate, session: SessionDep
) -> TrainingTemplate:
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "name" in changes:
        safe_name(changes["name"])
    return repo.update_template(session, template_id, **changes)


@router.delete("/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_template(template_id: IdPath, session: SessionDep) -> None:
    if not repo.delete_templates(session, [template_id]):
        raise HTTPException(404, detail=f"template {template_id} not found")


@router.post("/bulk-delete", response_model=dict[str, int])
def bulk_delete(body: BulkDelete, session: SessionDep) -> dict[str, int]:
    return {"deleted": repo.delete_templates(session, body.ids)}
