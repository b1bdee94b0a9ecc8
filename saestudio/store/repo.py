"""The functions the jobs and API layers call: one import for the whole store.

Conventions: every function takes the caller's ``Session`` first and never commits (the
caller's :func:`~saestudio.store.db.session_scope` does, once); missing rows raise
:class:`NotFound`, disallowed changes :class:`InvalidTransition`, taken names
:class:`NameTaken`, unconfirmed deletion of a best checkpoint
:class:`BestCheckpointProtected` — all :class:`StoreError`, for the API to map to
404 / 409. Status changes are single conditional UPDATEs, safe when the API and a worker
race on one row.
"""

from __future__ import annotations

from saestudio.store._common import Page, relative_path
from saestudio.store.checkpoints import (
    add_checkpoint,
    best_checkpoints,
    delete_checkpoint,
    delete_checkpoints_after,
    get_checkpoint,
    list_checkpoints,
)
from saestudio.store.datasets import (
    claim_dataset,
    create_dataset,
    dataset_heartbeat,
    delete_datasets,
    get_dataset,
    get_dataset_by_name,
    list_datasets,
    request_dataset_control,
    requeue_stale_extractions,
    set_dataset_status,
    stale_extractions,
    update_dataset,
)
from saestudio.store.lifecycle import ControlOutcome, Heartbeat
from saestudio.store.metrics import (
    add_metrics,
    delete_metrics_after,
    last_step,
    line_rows,
    metrics,
    split_line,
)
from saestudio.store.states import (
    TRANSITIONS,
    BestCheckpointProtected,
    InvalidTransition,
    NameTaken,
    NotFound,
    StoreError,
    can_transition,
)
from saestudio.store.templates import (
    create_template,
    delete_templates,
    get_template,
    get_template_by_name,
    list_templates,
    update_template,
)
from saestudio.store.trainings import (
    claim,
    create_training,
    delete_trainings,
    get_training,
    heartbeat,
    list_trainings,
    request_control,
    requeue_stale,
    set_status,
    stale_running,
    update_training,
)

__all__ = [
    "TRANSITIONS",
    "BestCheckpointProtected",
    "ControlOutcome",
    "Heartbeat",
    "InvalidTransition",
    "NameTaken",
    "NotFound",
    "Page",
    "StoreError",
    "add_checkpoint",
    "add_metrics",
    "best_checkpoints",
    "can_transition",
    "claim",
    "claim_dataset",
    "create_dataset",
    "create_template",
    "create_training",
    "dataset_heartbeat",
    "delete_checkpoint",
    "delete_checkpoints_after",
    "delete_datasets",
    "delete_metrics_after",
    "delete_templates",
    "delete_trainings",
    "get_checkpoint",
    "get_dataset",
    "get_dataset_by_name",
    "get_template",
    "get_template_by_name",
    "get_training",
    "heartbeat",
    "last_step",
    "line_rows",
    "list_checkpoints",
    "list_datasets",
    "list_templates",
    "list_trainings",
    "metrics",
    "relative_path",
    "request_control",
    "request_dataset_control",
    "requeue_stale",
    "requeue_stale_extractions",
    "set_dataset_status",
    "set_status",
    "split_line",
    "stale_extractions",
    "stale_running",
    "update_dataset",
    "update_template",
    "update_training",
]
