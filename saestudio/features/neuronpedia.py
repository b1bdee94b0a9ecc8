"""Neuronpedia upload layout of an inspection, as sae-dashboard's exporter writes it.

sae-dashboard (``sae_dashboard/neuronpedia/neuronpedia_export.py``) writes::

    {out}/{model_id}/{source_id}/
        release.jsonl  model.jsonl  sourceset.jsonl  source.jsonl
        features/batch-{n}.jsonl.gz       one Feature record per latent
        activations/batch-{n}.jsonl.gz    one Activation record per example

with the field names of ``neuronpedia_utils.db_models`` (camelCase, plus the snake_case
histogram / logit fields); every field of those records is written here, the ones an
inspection has nothing for as the exporter's own defaults (empty lists, null). Top
examples carry ``binMin = -1``, ``binMax`` = the latent's max, ``binContains = -1``;
quantile-band examples the band's bounds and the fraction of firings it holds, as the
exporter parses them from sae-dashboard's interval titles. Labels — which sae-dashboard
has no notion of — go out as Neuronpedia explanations
(``explanations/batch-{n}.jsonl.gz``: ``modelId``, ``layer``, ``index``,
``description``, ``authorId``, ``typeName``, ``explanationModelName``), one per
labelled latent.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from saestudio.features.records import load_latents, load_summary

FALLBACK_CREATOR_ID = "clkht01d40000jv08hvalcvly"  # sae-dashboard's bulk-import default
FEATURES_PER_BATCH = 128


class _Cuid:
    """Counter-based ids (as sae-dashboard's FastPseudoCuid): unique within an export."""

    def __init__(self) -> None:
        self.n = 0
        self.prefix = f"c{os.getpid():04x}{int(time.time()):08x}"

    def __call__(self) -> str:
        self.n += 1
        return f"{self.prefix}{self.n:08x}"[:25]


def _dump(path: Path, rows: Iterable[dict[str, Any]], gz: bool) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, compresslevel=5) if gz else data)


def _feature(rec: dict[str, Any], model_id: str, layer: str, creator: str, now: str) -> dict:
    logits = rec.get("logits") or {}
    hist = rec["histogram"]
    edges = hist["log10_edges"]
    centres = [10 ** ((a + b) / 2) for a, b in zip(edges[:-1], edges[1:], strict=False)]
    return {
        "modelId": model_id, "layer": layer, "index": str(rec["latent"]), "creatorId": creator,
        "createdAt": now, "maxActApprox": rec["max_activation"], "hasVector": False,
        "vector": [], "vectorLabel": None, "vectorDefaultSteerStrength": 10, "hookName": None,
        "topkCosSimIndices": [], "topkCosSimValues": [],
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_pearson": [],
        "correlated_neurons_l1": [], "correlated_features_indices": [],
        "correlated_features_pearson": [], "correlated_features_l1": [],
        "neg_str": [t["token"] for t in logits.get("bottom", [])],
        "neg_values": [t["value"] for t in logits.get("bottom", [])],
        "pos_str": [t["token"] for t in logits.get("top", [])],
        "pos_values": [t["value"] for t in logits.get("top", [])],
        "frac_nonzero": rec["density"],
        "freq_hist_data_bar_heights": hist["counts"],
        "freq_hist_data_bar_values": [round(c, 6) for c in centres],
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "decoder_weights_dist": [], "sourceSetName": None,
    }  # fmt: skip


def _activation(
    ex: dict[str, Any], rec: dict[str, Any], model_id: str, layer: str, creator: str,
    now: str, cuid: _Cuid, bin_min: float, bin_max: float, bin_contains: float,
) -> dict[str, Any]:  # fmt: skip
    values = ex["context_activations"]
    tokens = ex["context"] if ex["context"] is not None else [str(t) for t in ex["context_ids"]]
    top = max(values)
    return {
        "id": cuid(), "tokens": tokens, "index": str(rec["latent"]), "layer": layer,
        "modelId": model_id, "maxValue": top, "maxValueTokenIndex": values.index(top),
        "minValue": min(values), "values": values, "creatorId": creator, "dataSource": None,
        "dataIndex": str(ex["row"]), "dfaValues": [], "dfaTargetIndex": None,
        "dfaMaxValue": None, "createdAt": now, "lossValues": [], "logitContributions": None,
        "binMin": bin_min, "binMax": bin_max, "binContains": bin_contains,
        "qualifyingTokenIndex": ex["position"], "zIndices": None, "zValues": None,
    }  # fmt: skip


def write_neuronpedia(
    inspection_dir: str | Path,
    out_dir: str | Path,
    labels: Mapping[int, str] | None = None,
    *,
    model_id: str | None = None,
    source_set: str = "saestudio",
    layer: int | None = None,
    creator_id: str = FALLBACK_CREATOR_ID,
    creator_name: str = "SAE Studio",
) -> Path:
    """Write the inspection in ``inspection_dir`` in Neuronpedia's upload layout under
    ``out_dir/<model_id>/<layer>-<source_set>/``; returns that folder.

    ``labels`` (latent → text) go out as explanations. ``model_id`` defaults to the last
    part of the dataset's model name; ``layer`` to the first number in the hook name (0
    if none).
    """
    summary = load_summary(inspection_dir)
    model_id = model_id or Path(summary.model.rstrip("/")).name
    if layer is None:
        digits = [int(p) for p in summary.hook.replace("_", ".").split(".") if p.isdigit()]
        layer = digits[0] if digits else 0
    source_id = f"{layer}-{source_set}"
    root = Path(out_dir) / model_id / source_id
    now = datetime.now().isoformat()
    cuid = _Cuid()
    root.mkdir(parents=True, exist_ok=True)
    meta = {
        "release.jsonl": {
            "name": source_set, "description": f"{summary.architecture} SAE on {summary.hook}",
            "creatorName": creator_name, "creatorId": creator_id, "visibility": "PUBLIC",
            "isNewUi": False, "featured": False, "descriptionShort": None, "urls": [],
            "creatorEmail": None, "creatorNameShort": creator_name,
            "defaultSourceSetName": None, "defaultSourceId": None,
            "defaultUmapSourceIds": [], "createdAt": now,
        },
        "model.jsonl": {
            "id": model_id, "instruct": model_id.endswith("-it"), "creatorId": creator_id,
            "displayNameShort": model_id, "displayName": model_id, "tlensId": None,
            "dimension": None, "visibility": "PUBLIC", "defaultSourceSetName": None,
            "defaultSourceId": None, "inferenceEnabled": False, "layers": 0,
            "neuronsPerLayer": 0, "createdAt": now, "owner": "", "updatedAt": now,
            "website": None,
        },
        "sourceset.jsonl": {
            "modelId": model_id, "name": source_set, "creatorId": creator_id,
            "hasDashboards": True, "visibility": "PUBLIC", "description": summary.sae,
            "type": "", "creatorName": creator_name, "urls": [], "creatorEmail": None,
            "releaseName": source_set, "defaultOfModelId": None, "defaultRange": 1,
            "defaultShowBreaks": True, "showDfa": False, "showCorrelated": False,
            "showHeadAttribution": False, "showUmap": False, "createdAt": now,
        },
        "source.jsonl": {
            "id": source_id, "modelId": model_id, "setName": source_set,
            "creatorId": creator_id, "hasDashboards": True, "inferenceEnabled": False,
            "inferenceHosts": [], "saelensConfig": None, "saelensRelease": None,
            "saelensSaeId": None, "hfRepoId": None, "hfFolderId": None, "visibility": "PUBLIC",
            "defaultOfModelId": None, "hasUmap": False, "hasUmapLogSparsity": False,
            "hasUmapClusters": False, "num_prompts": None,
            "num_tokens_in_prompt": None, "dataset": summary.dataset, "notes": None,
            "createdAt": now,
        },
    }  # fmt: skip
    for name, row in meta.items():
        _dump(root / name, [row], gz=False)
    feats: list[dict[str, Any]] = []
    acts: list[dict[str, Any]] = []
    batch = 0

    def flush() -> None:
        nonlocal feats, acts, batch
        if feats:
            _dump(root / "features" / f"batch-{batch}.jsonl.gz", feats, gz=True)
            _dump(root / "activations" / f"batch-{batch}.jsonl.gz", acts, gz=True)
            feats, acts, batch = [], [], batch + 1

    common = (model_id, source_id, creator_id, now, cuid)
    for rec in load_latents(inspection_dir):
        feats.append(_feature(rec, model_id, source_id, creator_id, now))
        for ex in rec["top"]:
            acts.append(_activation(ex, rec, *common, -1, rec["max_activation"], -1))
        for band in rec["quantiles"]:
            for ex in band["examples"]:
                acts.append(
                    _activation(ex, rec, *common, band["low"], band["high"], 1 / summary.bands)
                )
        if len(feats) == FEATURES_PER_BATCH:
            flush()
    flush()
    explanations = [
        {
            "id": cuid(),
            "modelId": model_id,
            "layer": source_id,
            "index": str(lat),
            "description": text,
            "authorId": creator_id,
            "typeName": "human",
            "explanationModelName": None,
            "createdAt": now,
        }  # fmt: skip
        for lat, text in sorted((labels or {}).items())
        if text
    ]
    if explanations:
        _dump(root / "explanations" / "batch-0.jsonl.gz", explanations, gz=True)
    return root
