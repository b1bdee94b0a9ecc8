"""The hyperparameters a run really used, each with where its value came from, for the
run page's table (``GET /trainings/{id}`` → ``resolved``).

The trainer saves :func:`saestudio.training.config.resolve`'s output in every
checkpoint's ``state.json`` (key ``resolved``, beside the SAE job's own ``config``);
this module reads the latest checkpoint of each SAE and labels every field:

- ``set``: the config gives it (a sweep value counts: it is in the job's config);
- ``default``: left empty or at its schema default, and the value is the architecture's
  (or the schema's) constant;
- ``derived``: left empty and computed from other values (d_sae = expansion × d_in,
  TopK's lr scaled by d_sae, warm-up and decay from the step count, aux_k from d_out…).

Before a run's first checkpoint, :func:`planned` gives what ``resolve`` will return
from the config and the data's widths (the same call the trainer makes); a run on the
fly from a model has no widths on disk until it starts, and the field is null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from saestudio.activations.store import DataError
from saestudio.api.planning import widths
from saestudio.sae.config import SAEConfig
from saestudio.training.checkpoint import STATE_FILE
from saestudio.training.config import TrainConfig, resolve

Source = Literal["set", "default", "derived"]

DERIVED = {
    "sae.d_in",
    "sae.d_sae",
    "sae.d_out",
    "sparsity_warmup_steps",
    "lr_decay_steps",
    "aux_k",
    "dead_after_tokens",
}
"""Resolved from other values when the config leaves them empty (``resolve``)."""


class ResolvedValue(BaseModel):
    value: Any
    source: Source


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    """``{"sae": {"k": 8}, "lr": None}`` → ``{"sae.k": 8, "lr": None}`` (only the SAE
    block nests; lists and sweep dicts stay whole)."""
    out = {k: v for k, v in data.items() if k != "sae"}
    out.update({f"sae.{k}": v for k, v in (data.get("sae") or {}).items()})
    return out


def _schema_field(path: str) -> FieldInfo | None:
    if path.startswith("sae."):
        return SAEConfig.model_fields.get(path.removeprefix("sae."))
    return TrainConfig.model_fields.get(path)


def sources(config: dict[str, Any], resolved: dict[str, Any]) -> dict[str, ResolvedValue]:
    """Every field of ``config`` (a job's stored config) with the value ``resolved``
    gives it, or the config's own, and its :data:`Source`."""
    cfg, res = _flat(config), _flat(resolved)
    uses_k = SAEConfig.model_validate(resolved["sae"]).uses_k
    out: dict[str, ResolvedValue] = {}
    for path in sorted(cfg.keys() | res.keys()):
        given = cfg.get(path)
        value = res.get(path, given)
        field = _schema_field(path)
        if path in res and given is None:
            scaled = path == "lr" and uses_k  # lr ∝ 1/√(d_sae / 2^14) for TopK
            counted = path == "steps" and config.get("training_tokens") is not None
            source: Source = "derived" if path in DERIVED or scaled or counted else "default"
        elif given is None or (
            field is not None and given == field.get_default(call_default_factory=True)
        ):
            source = "default"
        else:
            source = "set"
        out[path] = ResolvedValue(value=value, source=source)
    return out


def read_resolved(folder: Path) -> dict[str, ResolvedValue] | None:
    """:func:`sources` of one checkpoint folder; None when its state.json is missing or
    unreadable (a checkpoint deleted by hand, or written by an older version)."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        return sources(state["config"], state["resolved"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def planned(config: dict[str, Any]) -> dict[str, dict[str, ResolvedValue]] | None:
    """Per SAE label: :func:`sources` of what the trainer will resolve for a stored run
    config, or None when the data's widths are not known here."""
    try:
        out = {}
        for label, job in TrainConfig.model_validate(config).sae_jobs():
            d_in, d_out = widths(job)
            if d_in is None:
                return None
            out[label] = sources(job.model_dump(mode="json"), resolve(job, d_in, d_out).to_json())
        return out
    except (ValueError, OSError, DataError):  # data moved or changed since the run was queued
        return None
