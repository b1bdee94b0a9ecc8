"""Status vocabularies, the allowed transitions between them, and the store's errors.

A run's ``status`` says what is true now; a separate ``control`` column holds what a user
asked for and the worker has not done yet (pause / stop / stop and finalize). Keeping
requests out of ``status`` means a card never shows ``running`` for a run the worker has
already left, and a worker that dies before honouring a request leaves a run whose
status is still accurate (``running`` with a stale heartbeat, then recovered).
"""

from __future__ import annotations

from typing import Literal, get_args

Status = Literal["queued", "running", "paused", "completed", "failed", "cancelled"]
"""One vocabulary for trainings and extractions (same badges, same state machine)."""
Control = Literal["pause", "stop", "stop_and_finalize"]
"""A request the worker polls (``should_pause`` / ``should_stop``) and then clears."""
Action = Literal["pause", "resume", "stop", "stop_and_finalize"]
"""What a user may ask of a job (the API's ``/control`` body)."""
MetricKind = Literal["train", "eval", "density", "downstream"]
RunAction = Literal["pause", "resume", "stop", "stop_and_finalize", "retry", "delete", "download"]
"""A button on a run: the ``/control`` actions plus retry (a new run with the same
config), delete and downloading the exported SAE."""
DatasetAction = Literal["pause", "resume", "stop", "delete"]
"""A button on an extraction: it has nothing to finalize, retry or download."""

STATUSES: tuple[str, ...] = get_args(Status)
CONTROLS: tuple[str, ...] = get_args(Control)
ACTIONS: tuple[str, ...] = get_args(Action)
METRIC_KINDS: tuple[str, ...] = get_args(MetricKind)

TRANSITIONS: dict[str, frozenset[str]] = {
    # paused: a pause on a job no worker has started yet needs no checkpoint
    "queued": frozenset({"running", "paused", "cancelled", "failed"}),
    # queued again: crash recovery, or a worker shutting down, hands the job back
    "running": frozenset({"queued", "paused", "completed", "failed", "cancelled"}),
    "paused": frozenset({"queued", "cancelled"}),
    # resumed in place from the last checkpoint / shard (stop keeps them, SPEC §2.E)
    "failed": frozenset({"queued"}),
    "cancelled": frozenset({"queued"}),
    # final: its export exists; continuing it is a new run (parent_id), not a transition
    "completed": frozenset(),
}
FINISHED = ("completed", "failed", "cancelled")

RUN_ACTIONS: dict[str, tuple[RunAction, ...]] = {
    # stop_and_finalize on a queued run needs a checkpoint: offered once it runs or pauses
    "queued": ("pause", "stop", "delete"),
    "running": ("pause", "stop", "stop_and_finalize"),  # delete: stop it first
    "paused": ("resume", "stop", "stop_and_finalize", "delete"),
    "completed": ("download", "retry", "delete"),
    "failed": ("resume", "retry", "delete"),
    "cancelled": ("resume", "retry", "delete"),
}
"""What a user may do to a run in each status: the one table the API returns as each
run's ``actions`` (the web studio shows exactly these buttons), every entry one that
:func:`saestudio.store.lifecycle.request_control` and the routes accept in that status."""
DATASET_ACTIONS: dict[str, tuple[DatasetAction, ...]] = {
    "queued": ("pause", "stop", "delete"),
    "running": ("pause", "stop"),
    "paused": ("resume", "stop", "delete"),
    "completed": ("delete",),
    "failed": ("resume", "delete"),
    "cancelled": ("resume", "delete"),
}
"""The same for an activation-dataset extraction."""


def run_actions(status: str, control: str | None) -> list[RunAction]:
    """The actions of a run in ``status`` (:data:`RUN_ACTIONS`); a request the worker has
    not honoured yet (``control`` on a running run) leaves only withdrawing a pause:
    repeating or contradicting the pending request would meet a 409 or race the worker."""
    if status == "running" and control:
        return ["resume"] if control == "pause" else []
    return list(RUN_ACTIONS.get(status, ()))


def dataset_actions(status: str, control: str | None) -> list[DatasetAction]:
    """The same for an extraction (:data:`DATASET_ACTIONS`)."""
    if status == "running" and control:
        return ["resume"] if control == "pause" else []
    return list(DATASET_ACTIONS.get(status, ()))


def can_transition(old: str, new: str) -> bool:
    """Whether a training or extraction may go from status ``old`` to ``new``."""
    return new in TRANSITIONS.get(old, frozenset())


def sources_of(new: str) -> list[str]:
    """Every status that may move to ``new``: the ``WHERE status IN`` of a transition."""
    return [old for old, targets in TRANSITIONS.items() if new in targets]


class StoreError(Exception):
    """Base of the errors the API maps to HTTP statuses."""


class NotFound(StoreError, LookupError):
    """No row with that id (API: 404)."""

    def __init__(self, what: str, ident: object):
        super().__init__(f"{what} {ident} not found")
        self.what, self.ident = what, ident


class InvalidTransition(StoreError):
    """The requested status change or control action is not allowed now (API: 409)."""

    def __init__(self, message: str, *, current: str | None = None):
        super().__init__(message)
        self.current = current


class NameTaken(StoreError):
    """A unique name is already used (API: 409)."""

    def __init__(self, what: str, name: str):
        super().__init__(f"a {what} named {name!r} already exists")
        self.what, self.name = what, name


class BestCheckpointProtected(StoreError):
    """Deleting the best checkpoint needs an explicit confirmation (API: 409)."""
