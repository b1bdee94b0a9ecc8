"""SAELens export of trained SAEs and checkpoints, and a description of SAE / checkpoint
/ run folders: what the trainer writes at the end of a run, what ``saestudio export`` and
``info``, the studio's checkpoint download and the job runner call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.config import SAEConfig
from saestudio.sae.registry import build_sae
from saestudio.sae.saelens_format import save_saelens
from saestudio.sae.saelens_load import load_saelens, read_saelens_cfg
from saestudio.training import checkpoint as ckpt
from saestudio.training.config import TrainConfig
from saestudio.training.metrics import log_sparsity


def export_sae(
    sae: SparseAutoencoder,
    path: Path,
    *,
    cfg: TrainConfig,
    normalize: str,
    scale_in: float,
    scale_out: float,
    fire_counts: torch.Tensor,
    step: int,
) -> Path:
    """SAELens export of a trained SAE (the trainer's end of run, and :func:`export_checkpoint`)."""
    cpu = build_sae(sae.cfg)
    cpu.load_state_dict({k: v.detach().cpu() for k, v in sae.state_dict().items()})
    cpu.eval()
    if normalize in ("expected_average_only_in", "unit_mean_squared_norm"):
        cpu.fold_input_scaling(scale_in, scale_out)
    tokens = step * cfg.batch_size
    return save_saelens(
        cpu,
        path,
        model_name=cfg.model,
        hook_name=cfg.hook[0] if cfg.hook else None,
        hook_name_out=cfg.target_hook,
        normalize_activations="constant_norm_rescale"
        if normalize == "constant_norm_rescale"
        else "none",
        sparsity=log_sparsity(fire_counts, tokens) if tokens else None,
        extra_metadata={"training_steps": step, "training_tokens": tokens},
    )


def sae_from_checkpoint(path: str | Path) -> tuple[SparseAutoencoder, ckpt.Checkpoint]:
    """Rebuild the (normalised-space) SAE stored in a checkpoint."""
    c = ckpt.load_checkpoint(path)
    sae = build_sae(SAEConfig.model_validate(c.state["resolved"]["sae"]))
    sae.load_state_dict(c.sae)
    return sae, c


def export_checkpoint(path: str | Path, out: str | Path) -> Path:
    """Write a checkpoint as a SAELens folder, folding the dataset normalisation in."""
    try:
        ckpt.resolve_checkpoint(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"checkpoint: no checkpoint (step_*/state.json) found in {path}"
        ) from None
    sae, c = sae_from_checkpoint(path)
    fire = c.tensors["fire_total"] + c.tensors["fire_window"]
    return export_sae(
        sae,
        Path(out),
        cfg=TrainConfig.model_validate(c.state["config"]),
        normalize=c.state["resolved"]["normalize_activations"],
        scale_in=c.state["scale_in"],
        scale_out=c.state["scale_out"],
        fire_counts=fire,
        step=int(c.state["step"]),
    )


def load_any(path: str | Path) -> SparseAutoencoder:
    """An SAE from a SAELens folder (ours or SAELens's) or a checkpoint / run folder.

    Checkpoints hold the SAE in normalised space; use ``export_checkpoint`` for raw inputs.
    """
    p = Path(path)
    if (p / "cfg.json").is_file():
        return load_saelens(p)
    return sae_from_checkpoint(p)[0]


def describe(path: str | Path) -> dict[str, Any]:
    """A summary of an SAE folder, checkpoint or run folder, for ``saestudio info``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"path: no such file or folder: {p}")
    info: dict[str, Any] = {"path": str(p)}
    if (p / "cfg.json").is_file():
        cfg = read_saelens_cfg(p)
        info["sae"] = {
            k: cfg.get(k)
            for k in (
                "architecture",
                "d_in",
                "d_sae",
                "d_out",
                "k",
                "dtype",
                "normalize_activations",
            )
            if k in cfg
        }
        info["metadata"] = cfg.get("metadata", {})
    try:
        c = ckpt.load_checkpoint(p)
    except FileNotFoundError:
        c = None
    if c is not None:
        info["checkpoint"] = {
            "path": str(c.path),
            "step": c.state["step"],
            "eval": c.state.get("eval"),
        }
        info["resolved"] = c.state["resolved"]
        best = ckpt.read_best(c.path.parent)
        if best:
            info["best_checkpoint"] = best
    metrics = p / "metrics.jsonl"
    if metrics.is_file():
        lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        train_lines = [x for x in lines if "loss" in x]
        if train_lines:
            info["last_metrics"] = train_lines[-1]
    if "sae" not in info and "checkpoint" not in info:
        raise FileNotFoundError(f"path: {p} holds neither an SAE (cfg.json) nor a checkpoint")
    return info


__all__ = ["describe", "export_checkpoint", "export_sae", "load_any", "sae_from_checkpoint"]
