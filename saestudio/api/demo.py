"""The studio's side of the packaged demo (:mod:`saestudio.demo`): its activation dataset
row, registered once — what a newcomer's one click (``POST /demo``) and ``make run``
(``saestudio serve --demo``) start."""

from __future__ import annotations

from sqlalchemy.orm import Session

from saestudio.demo import DEMO_NAME, DEMO_PATH, demo_extract_config
from saestudio.settings import Settings
from saestudio.store import repo
from saestudio.store.models import ActivationDataset


def ensure_demo_dataset(session: Session, settings: Settings) -> tuple[ActivationDataset, bool]:
    """The demo dataset row, registered on first call; True when the caller must enqueue
    its extraction (new, or an earlier attempt failed or was stopped)."""
    row = repo.get_dataset_by_name(session, DEMO_NAME)
    if row is None:
        cfg = demo_extract_config(settings.data_dir / DEMO_PATH)
        config = {**cfg.model_dump(mode="json"), "out": DEMO_PATH}
        row = repo.create_dataset(session, config, name=DEMO_NAME, path=DEMO_PATH)
        return row, True
    if row.status in ("failed", "cancelled", "paused"):
        # a resume continues the shards it already stored
        outcome = repo.request_dataset_control(session, row.id, "resume")
        return outcome.row, outcome.enqueue
    return row, False
