"""Request and response bodies: a Create / Update / Public family per resource.

Create bodies embed the ML configs (``TrainConfig``, ``ExtractConfig``) so their field
validation is FastAPI's 422 with the offending field named.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, computed_field

from saestudio.activations.extract import ExtractConfig
from saestudio.api.resolved import ResolvedValue
from saestudio.store.models import MAX_ID
from saestudio.store.states import (
    Control,
    DatasetAction,
    RunAction,
    Status,
    dataset_actions,
    run_actions,
)
from saestudio.training.config import TrainConfig

T = TypeVar("T")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class _Row(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ---- trainings -------------------------------------------------------------------------------


class TrainingCreate(BaseModel):
    name: str | None = Field(None, max_length=200)
    config: TrainConfig
    dataset_id: int | None = Field(None, ge=1, le=MAX_ID)


class TrainingUpdate(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class TrainingPublic(_Row):
    id: int
    name: str
    status: Status
    control: Control | None
    error: str | None
    config: dict[str, Any]
    architecture: str
    d_sae: int | None
    step: int
    total_steps: int | None
    progress: float
    latest_metrics: dict[str, Any] | None
    eta_seconds: float | None
    out_dir: str
    exports: dict[str, str] | None
    dataset_id: int | None
    parent_id: int | None
    worker: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field(  # type: ignore[prop-decorator]
        description="What a user may do to the run now (saestudio.store.states.RUN_ACTIONS)."
    )
    @property
    def actions(self) -> list[RunAction]:
        return run_actions(self.status, self.control)


class TrainingDetail(TrainingPublic):
    resolved: dict[str, dict[str, ResolvedValue]] | None = Field(
        None,
        description="Per SAE: every hyperparameter's value as the run uses it (from the "
        "latest checkpoint's state.json; before the first one, resolved from the config and "
        "the data's widths) and its source: set, default or derived. Null while neither is "
        "known (a run on the fly from a model, before its first checkpoint).",
    )


class BulkDelete(BaseModel):
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=1000)


class BulkDeleted(BaseModel):
    deleted: list[int]


class ControlRequest(BaseModel):
    action: Literal["pause", "resume", "stop", "stop_and_finalize"]


class DatasetControlRequest(BaseModel):
    """An extraction has nothing to finalize: its stored shards are the result."""

    action: Literal["pause", "resume", "stop"]


# ---- metrics and checkpoints -----------------------------------------------------------------


class MetricPublic(_Row):
    step: int
    sae: str
    kind: str
    metrics: dict[str, Any]


class CheckpointPublic(_Row):
    id: int
    training_id: int
    sae: str
    step: int
    path: str
    is_best: bool
    eval_loss: float | None
    size_bytes: int | None
    created_at: datetime


class ExportPublic(BaseModel):
    checkpoint_id: int
    path: str


# ---- datasets --------------------------------------------------------------------------------


class DatasetCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    config: ExtractConfig


class DatasetPublic(_Row):
    id: int
    name: str
    path: str
    status: Status
    control: Control | None
    error: str | None
    config: dict[str, Any]
    manifest: dict[str, Any] | None
    contexts: int
    target_contexts: int | None
    rows: int
    progress: float
    created_at: datetime
    updated_at: datetime

    @computed_field(  # type: ignore[prop-decorator]
        description="What a user may do to the extraction now "
        "(saestudio.store.states.DATASET_ACTIONS)."
    )
    @property
    def actions(self) -> list[DatasetAction]:
        return dataset_actions(self.status, self.control)


# ---- templates -------------------------------------------------------------------------------


class TemplateCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    config: dict[str, Any]
    favourite: bool = False


class TemplateUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = None
    config: dict[str, Any] | None = None
    favourite: bool | None = None


class TemplatePublic(_Row):
    id: int
    name: str
    description: str
    config: dict[str, Any]
    favourite: bool
    created_at: datetime
    updated_at: datetime


class ImportResult(BaseModel):
    created: list[str]
    skipped: list[str]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    db: bool
    broker: str
    version: str
