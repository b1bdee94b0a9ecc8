"""Metric definitions (SPEC §3), computed on-device; callers sync once per log line."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def reconstruction_metrics(target: Tensor, x_hat: Tensor, z: Tensor) -> dict[str, Tensor]:
    """MSE, per-element MSE, FVU, explained variance, L0 and L1 of one batch.

    FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖² with x̄ the per-dimension batch mean — not the seed's
    variance of a flattened tensor (erratum 1).
    """
    target = target.float()
    err = (target - x_hat.float()).pow(2)
    sq_err = err.sum(dim=-1)  # [batch]
    total_var = (target - target.mean(dim=0)).pow(2).sum().clamp_min(1e-12)
    fvu = sq_err.sum() / total_var
    return {
        "mse": sq_err.mean(),
        "mse_per_element": err.mean(),
        "fvu": fvu,
        "explained_variance": 1 - fvu,
        **latent_metrics(z),
    }


def latent_metrics(z: Tensor) -> dict[str, Tensor]:
    """L0 and L1 of latents ``[batch, d_sae]``, dense or sparse COO (the TopK training path)."""
    if z.is_sparse:
        values = z._values().float()
        rows = max(z.shape[0], 1)
        return {"l0": (values != 0).sum() / rows, "l1": values.abs().sum() / rows}
    return {
        "l0": (z != 0).float().sum(dim=-1).mean(),
        "l1": z.float().abs().sum(dim=-1).mean(),
    }


def density_histogram(fire_counts: Tensor, tokens: int, bins: int = 40) -> dict[str, list[float]]:
    """Histogram of log10 firing frequency; never-firing latents go in the first bin (-10)."""
    freq = fire_counts.double().cpu() / max(tokens, 1)
    log_freq = torch.log10(freq.clamp_min(1e-10))
    lo, hi = -10.0, 0.0
    counts = torch.histc(log_freq.float(), bins=bins, min=lo, max=hi)
    edges = [lo + i * (hi - lo) / bins for i in range(bins + 1)]
    return {"edges": edges, "counts": [int(c) for c in counts.tolist()]}


def log_sparsity(fire_counts: Tensor, tokens: int) -> Tensor:
    """log10 feature density per latent, as SAELens stores in ``sparsity.safetensors``."""
    return torch.log10(fire_counts.double().cpu() / max(tokens, 1) + 1e-10).float()


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
