"""Metric definitions (SPEC §3), computed on-device; callers sync once per log line."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def metric_sums(target: Tensor, x_hat: Tensor, z: Tensor, mean: Tensor) -> Tensor:
    """``[4]`` sums over the rows, in ``target``'s dtype: Σ‖x − x̂‖², Σ‖x − x̄‖² (``mean``
    is x̄, the per-dimension mean of the batch — of the global batch under torchrun), and
    the rows' L0 and L1 summed. Sums, so ranks can add theirs before
    :func:`metrics_from_sums` divides."""
    l0, l1 = _latent_sums(z)
    return torch.stack(
        [
            (target - x_hat).pow(2).sum(),
            (target - mean).pow(2).sum(),
            l0.to(target.dtype),
            l1.to(target.dtype),
        ]
    )


def metrics_from_sums(sums: Tensor, rows: int, d: int) -> dict[str, Tensor]:
    """MSE (per row, summed over dimensions), per-element MSE, FVU, explained variance, L0
    and L1 of ``rows`` rows of width ``d`` from :func:`metric_sums`.

    FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖² with x̄ the per-dimension batch mean — not the seed's
    variance of a flattened tensor (erratum 1).
    """
    sq, var, l0, l1 = sums.unbind()
    fvu = sq / var.clamp_min(1e-12)
    return {
        "mse": sq / rows,
        "mse_per_element": sq / (rows * d),
        "fvu": fvu,
        "explained_variance": 1 - fvu,
        "l0": l0 / rows,
        "l1": l1 / rows,
    }


def reconstruction_metrics(target: Tensor, x_hat: Tensor, z: Tensor) -> dict[str, Tensor]:
    """SPEC §3 metrics of one batch (:func:`metrics_from_sums`), in float32."""
    target = target.float()
    rows, d = target.shape
    sums = metric_sums(target, x_hat.float(), z, target.mean(dim=0))
    return metrics_from_sums(sums, rows, d)


def _latent_sums(z: Tensor) -> tuple[Tensor, Tensor]:
    """Σ L0 and Σ L1 over the rows of latents ``[batch, d_sae]``, dense or sparse COO (the
    TopK training path)."""
    values = z._values() if z.is_sparse else z
    return (values != 0).sum(), values.float().abs().sum()


def latent_metrics(z: Tensor) -> dict[str, Tensor]:
    """L0 and L1 (means over the rows) of latents ``[batch, d_sae]``, dense or sparse COO."""
    rows = max(z.shape[0], 1)
    l0, l1 = _latent_sums(z)
    return {"l0": l0 / rows, "l1": l1 / rows}


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
