"""Latent labels (a researcher's name and note for one latent of one SAE of a run) and
the latents listing that joins them to an inspection's index."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from saestudio.store._common import MAX_PAGE, Page, dialect_insert
from saestudio.store.models import InspectionLatent, LatentLabel, utcnow
from saestudio.store.states import NotFound

LatentSort = Literal["latent", "density", "max_activation", "mean_activation", "label"]
LatentFilter = Literal["all", "alive", "dead", "dense", "labelled"]
DENSE = 0.1
"""A latent firing on more than this fraction of rows is dense (SPEC §H: >10 %)."""


class LatentRow(NamedTuple):
    """One listed latent: its index row and its label (None when unlabelled)."""

    latent: InspectionLatent
    label: LatentLabel | None


def set_label(
    session: Session, training_id: int, sae: str, latent: int, label: str, note: str = ""
) -> LatentLabel:
    """Create or replace the label of a latent (one UPSERT)."""
    insert = dialect_insert(session)
    values = {"training_id": training_id, "sae": sae, "latent": latent}
    stmt = insert(LatentLabel).values(**values, label=label, note=note, updated_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=["training_id", "sae", "latent"],
        set_={"label": label, "note": note, "updated_at": utcnow()},
    )
    session.execute(stmt)
    found = get_label(session, training_id, sae, latent)
    assert found is not None
    return found


def get_label(session: Session, training_id: int, sae: str, latent: int) -> LatentLabel | None:
    return session.scalar(
        select(LatentLabel)
        .where(
            LatentLabel.training_id == training_id,
            LatentLabel.sae == sae,
            LatentLabel.latent == latent,
        )
        .execution_options(populate_existing=True)
    )


def clear_label(session: Session, training_id: int, sae: str, latent: int) -> bool:
    """Remove a latent's label; False when it had none."""
    result = session.execute(
        delete(LatentLabel).where(
            LatentLabel.training_id == training_id,
            LatentLabel.sae == sae,
            LatentLabel.latent == latent,
        )
    )
    return bool(getattr(result, "rowcount", 0))


def labels_of(session: Session, training_id: int, sae: str) -> dict[int, LatentLabel]:
    """Every label of one SAE of a run, by latent (what the exports carry)."""
    rows = session.scalars(
        select(LatentLabel).where(LatentLabel.training_id == training_id, LatentLabel.sae == sae)
    )
    return {r.latent: r for r in rows}


def _joined(training_id: int) -> object:
    return and_(
        LatentLabel.training_id == training_id,
        LatentLabel.sae == InspectionLatent.sae,
        LatentLabel.latent == InspectionLatent.latent,
    )


def list_latents(
    session: Session,
    inspection_id: int,
    training_id: int,
    sae: str,
    *,
    sort: LatentSort = "latent",
    descending: bool = False,
    filter: LatentFilter = "all",
    q: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[LatentRow]:
    """One page of an SAE's latents with their labels. ``q`` matches a top token (part
    of it, any case), a label or note, or ``#N`` / ``N`` the latent's number."""
    where: list[Any] = [
        InspectionLatent.inspection_id == inspection_id,
        InspectionLatent.sae == sae,
    ]
    if filter == "alive":
        where.append(InspectionLatent.density > 0)
    elif filter == "dead":
        where.append(InspectionLatent.density <= 0)
    elif filter == "dense":
        where.append(InspectionLatent.density > DENSE)
    elif filter == "labelled":
        where.append(LatentLabel.id.is_not(None))
    text = (q or "").strip()
    if text:
        like = f"%{text.lower()}%"
        match: list[Any] = [
            InspectionLatent.search_text.like(like),
            func.lower(LatentLabel.label).like(like),
            func.lower(LatentLabel.note).like(like),
        ]
        number = text.lstrip("#")
        if number.isdigit() and len(number) < 10:
            match.append(InspectionLatent.latent == int(number))
        where.append(or_(*match))
    column = {
        "latent": InspectionLatent.latent,
        "density": InspectionLatent.density,
        "max_activation": InspectionLatent.max_activation,
        "mean_activation": InspectionLatent.mean_activation,
        "label": func.lower(LatentLabel.label),
    }[sort]
    order: list[Any] = [column.desc() if descending else column.asc()]
    if sort == "label":  # unlabelled latents last, whichever way
        order.insert(0, LatentLabel.id.is_(None))
    base = (
        select(InspectionLatent, LatentLabel)
        .outerjoin(LatentLabel, _joined(training_id))  # type: ignore[arg-type]
        .where(*where)
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    page = session.execute(
        base.order_by(*order, InspectionLatent.latent).limit(min(limit, MAX_PAGE)).offset(offset)
    ).all()
    return Page([LatentRow(a, b) for a, b in page], int(total))


def get_latent(
    session: Session, inspection_id: int, training_id: int, sae: str, latent: int
) -> LatentRow:
    """One indexed latent with its label, or :class:`NotFound`."""
    found = session.execute(
        select(InspectionLatent, LatentLabel)
        .outerjoin(LatentLabel, _joined(training_id))  # type: ignore[arg-type]
        .where(
            InspectionLatent.inspection_id == inspection_id,
            InspectionLatent.sae == sae,
            InspectionLatent.latent == latent,
        )
    ).first()
    if found is None:
        raise NotFound(f"latent of SAE {sae!r}", latent)
    return LatentRow(found[0], found[1])
