"""What the web studio needs beyond the resources: the architectures with their
paper-grounded defaults, and the one-click demo."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel

from saestudio.api.demo import ensure_demo_dataset
from saestudio.api.deps import CeleryDep, SessionDep, SettingsDep
from saestudio.api.planning import ArchitectureInfo, architectures
from saestudio.api.routes.trainings import confined_config, new_run
from saestudio.api.schemas import DatasetPublic, TrainingPublic
from saestudio.demo import demo_training_config
from saestudio.jobs.tasks import enqueue
from saestudio.training.config import TrainConfig

router = APIRouter(tags=["studio"])


@router.get("/architectures", response_model=list[ArchitectureInfo])
def list_architectures() -> list[ArchitectureInfo]:
    """Every architecture, whether it takes ``k``, and its defaults (what a training
    uses for each hyperparameter left empty)."""
    return architectures()


class DemoStarted(BaseModel):
    dataset: DatasetPublic
    training: TrainingPublic


@router.post("/demo", status_code=status.HTTP_201_CREATED, response_model=DemoStarted)
def start_demo(session: SessionDep, settings: SettingsDep, celery: CeleryDep) -> DemoStarted:
    """Extract the demo activation dataset (once) and queue a TopK training on it; the
    training starts as soon as the extraction completes."""
    dataset, extract = ensure_demo_dataset(session, settings)
    cfg = TrainConfig.model_validate(demo_training_config())
    run = new_run(session, confined_config(cfg, settings), "demo topk", dataset_id=dataset.id)
    # commit first: a worker that receives either task must find both rows
    session.commit()
    if extract:
        enqueue(celery, "extraction", dataset.id)
    enqueue(celery, "training", run.id)
    return DemoStarted(
        dataset=DatasetPublic.model_validate(dataset), training=TrainingPublic.model_validate(run)
    )
