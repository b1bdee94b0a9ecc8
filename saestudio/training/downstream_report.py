"""End-of-training downstream check: next-token loss with each SAE spliced into the model.

Runs when the job names a causal LM (``model``) and text to read (``dataset``, or the
text an activation dataset was extracted from). Encoders and jobs without text are
skipped with a log line: the metric needs next-token predictions.
"""

from __future__ import annotations

import json
import logging
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from saestudio.activations.downstream import evaluate_downstream, is_causal_lm_class
from saestudio.activations.text_data import TextSource, iter_contexts, load_tokenizer
from saestudio.sae.saelens_load import load_saelens
from saestudio.training.config import TrainConfig
from saestudio.training.sae_run import SAERun

log = logging.getLogger(__name__)


def _manifest(job: TrainConfig) -> dict[str, Any]:
    path = Path(job.activations or "") / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _text(job: TrainConfig, manifest: dict[str, Any]) -> TextSource | None:
    """The job's text, or the text its activation dataset was extracted from."""
    if job.dataset:
        return TextSource(job.dataset, text_column=job.text_column)
    ds = manifest.get("dataset") or {}
    if not ds.get("name"):
        return None
    return TextSource(
        ds["name"],
        split=ds.get("split", "train"),
        text_column=ds.get("text_column", "text"),
        config=ds.get("config"),
    )


def _model(name: str, job: TrainConfig, source: Any) -> tuple[Any, Any] | None:
    """(model, tokenizer) when ``name`` is a causal LM; None otherwise."""
    if getattr(source, "model", None) is not None:  # on the fly: already loaded
        model, tokenizer = source.model, source.tokenizer
    else:
        from transformers import AutoConfig

        from saestudio.activations.models import load_model

        try:
            archs = AutoConfig.from_pretrained(name).architectures or []
            if not any(is_causal_lm_class(a) for a in archs):
                return None  # an encoder: no next-token loss to measure
            model = load_model(name, "float32", job.device)
            tokenizer = load_tokenizer(name)
        except (OSError, ValueError) as e:
            log.info("downstream metric skipped: cannot load %s (%s)", name, e)
            return None
    if model.get_output_embeddings() is None:
        return None
    return model, tokenizer


def downstream_lines(
    job: TrainConfig, runs: list[SAERun], exports: dict[str, Path | None], source: Any, step: int
) -> list[tuple[SAERun, dict[str, Any]]]:
    """One metrics line per SAE with CE loss clean / spliced / zero-ablated and KL."""
    manifest = _manifest(job)
    text = _text(job, manifest)
    name = job.model or manifest.get("model")
    if name is None or text is None or job.downstream_contexts == 0:
        return []
    loaded = _model(name, job, source)
    if loaded is None:
        log.info("downstream metric skipped: %s is not a causal LM", name)
        return []
    model, tokenizer = loaded
    length = manifest.get("context_length", job.context_length)
    contexts = list(islice(iter_contexts(text, tokenizer, length), job.downstream_contexts))
    if not contexts:
        return []
    ids = torch.tensor(contexts, dtype=torch.long)
    lines = []
    for run in runs:
        path = exports.get(run.label)
        if path is None or not run.cfg.hook:
            continue
        res = evaluate_downstream(
            model,
            load_saelens(path),
            run.cfg.hook[0],
            ids,
            target_hook=run.cfg.target_hook,
            normalize="constant_norm_rescale"
            if run.hp.normalize_activations == "constant_norm_rescale"
            else "none",
        )
        lines.append((run, {"step": step, "sae": run.label, **res._asdict()}))
    return lines
