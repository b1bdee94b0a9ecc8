"""Core evaluation metrics of an SAE on held-out rows (SPEC §2.H; SAELens ``evals.py`` and
SAEBench's core metrics), streamed over batches with float64 accumulators.

Per row x (the target hook's activation for transcoders), reconstruction x̂ and latents z:

- ``explained_variance`` = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the per-dimension mean over all
  rows (``fvu`` = 1 − explained variance). The denominator is accumulated around a shift
  (the first batch's mean), so a large constant offset does not cancel catastrophically.
- ``mse`` = mean over rows of Σ_d (x − x̂)²; ``mse_per_element`` = that / d.
- ``cossim`` = mean over rows of x·x̂ / (‖x‖‖x̂‖).
- ``l2_ratio`` = mean over rows of ‖x̂‖ / ‖x‖ (shrinkage; < 1 when the SAE shrinks).
- ``relative_reconstruction_bias`` γ = E[‖x̂‖²] / E[x̂·x] (Gated SAE paper, eq. 10: the γ
  minimising E‖x̂/γ − x‖²; < 1 is shrinkage).
- ``l0`` = mean over rows of #{i: z_i ≠ 0}; ``l1`` = mean over rows of Σ_i |z_i|.
- ``dead_latents``: latents that fire on none of the rows; ``dense_latents_1pct`` /
  ``dense_latents_10pct``: latents firing on more than 1 % / 10 % of the rows.
- ``enc_dec_cosine_mean`` / ``_min``: the cosine of each latent's encoder column
  W_enc[:, i] and decoder row W_dec[i], averaged / smallest over latents (SAEs only:
  a transcoder's encoder and decoder live in different spaces).
- ``dec_dec_max_cosine``: the largest |cosine| between two distinct decoder rows, and
  ``dec_dec_max_cosine_mean``: each row's largest |cosine| with another row, averaged
  (duplicated latents read near 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.sparse_ops import fire_counts

DENSE_THRESHOLDS = {"dense_latents_1pct": 0.01, "dense_latents_10pct": 0.10}


class MetricAccumulator:
    """Streaming sums for the per-row metrics; ``add`` batches, then ``result``."""

    def __init__(self, d_sae: int):
        self.rows = 0
        self.d = 0
        self.shift: Tensor | None = None  # [d] the first batch's mean
        self.sum_x: Tensor | None = None  # Σ (x − shift)            [d]
        self.sum_sq = 0.0  # Σ ‖x − shift‖²
        self.sq_err = 0.0  # Σ ‖x − x̂‖²
        self.cos = 0.0  # Σ cos(x, x̂)
        self.l2_ratio = 0.0  # Σ ‖x̂‖/‖x‖
        self.hat_sq = 0.0  # Σ ‖x̂‖²
        self.hat_dot = 0.0  # Σ x̂·x
        self.l0 = 0.0
        self.l1 = 0.0
        self.fired = torch.zeros(d_sae, dtype=torch.float64)  # rows each latent fired on

    @torch.no_grad()
    def add(self, target: Tensor, x_hat: Tensor, z: Tensor) -> None:
        x, xh = target.double(), x_hat.double()
        if self.shift is None:
            self.shift = x.mean(0)
            self.sum_x = torch.zeros_like(self.shift)
            self.d = x.shape[1]
        assert self.sum_x is not None
        c = x - self.shift
        self.sum_x += c.sum(0)
        self.sum_sq += float(c.pow(2).sum())
        self.sq_err += float((x - xh).pow(2).sum())
        nx, nh = x.norm(dim=1), xh.norm(dim=1)
        dot = (x * xh).sum(1)
        self.cos += float((dot / (nx * nh).clamp_min(1e-12)).sum())
        self.l2_ratio += float((nh / nx.clamp_min(1e-12)).sum())
        self.hat_sq += float(nh.pow(2).sum())
        self.hat_dot += float(dot.sum())
        # the latents without a [rows, d_sae] float64 copy (1 GB at 4,096 rows × 32k latents):
        # a sparse z by its values, a dense one ~16 MB of temporaries at a time
        d_sae = self.fired.numel()
        parts = [z] if z.is_sparse else z.split(max(1, (1 << 22) // max(d_sae, 1)))
        for part in parts:
            counts = fire_counts(part, d_sae)  # [d_sae]
            self.fired += counts.cpu().double()
            self.l0 += float(counts.sum())
            values = part._values() if part.is_sparse else part
            self.l1 += float(values.abs().sum(dtype=torch.float64))
        self.rows += x.shape[0]

    def result(self) -> dict[str, float]:
        n = max(self.rows, 1)
        assert self.sum_x is not None, "no rows were added"
        # Σ‖x − x̄‖² = Σ‖x − s‖² − N‖x̄ − s‖² with s the shift
        total = max(self.sum_sq - float(self.sum_x.pow(2).sum()) / n, 1e-300)
        fvu = self.sq_err / total
        frac = self.fired / n
        out = {
            "explained_variance": 1.0 - fvu,
            "fvu": fvu,
            "mse": self.sq_err / n,
            "mse_per_element": self.sq_err / (n * max(self.d, 1)),
            "cossim": self.cos / n,
            "l2_ratio": self.l2_ratio / n,
            "relative_reconstruction_bias": self.hat_sq / self.hat_dot
            if self.hat_dot
            else float("nan"),
            "l0": self.l0 / n,
            "l1": self.l1 / n,
            "dead_latents": int((self.fired == 0).sum()),
        }
        for name, threshold in DENSE_THRESHOLDS.items():
            out[name] = int((frac > threshold).sum())
        return {k: v for k, v in out.items() if v == v}  # γ is undefined when x̂·x sums to 0


@torch.no_grad()
def weight_metrics(sae: SparseAutoencoder, chunk: int = 2048) -> dict[str, float]:
    """Encoder–decoder and decoder–decoder cosines (see the module docstring); the
    ``[d_sae, d_sae]`` Gram matrix is built ``chunk`` rows at a time."""
    W_dec = sae.W_dec.detach().float()
    dec = W_dec / W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)  # [d_sae, d_out]
    out: dict[str, float] = {}
    if sae.d_in == sae.d_out:
        W_enc = sae.W_enc.detach().float().t()  # [d_sae, d_in]
        enc = W_enc / W_enc.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = (enc * dec).sum(1)
        out["enc_dec_cosine_mean"] = float(cos.mean())
        out["enc_dec_cosine_min"] = float(cos.min())
    if sae.d_sae > 1:
        best = torch.empty(sae.d_sae)
        for start in range(0, sae.d_sae, chunk):
            gram = (dec[start : start + chunk] @ dec.t()).abs_()  # [chunk, d_sae]
            rows = torch.arange(gram.shape[0])
            gram[rows, rows + start] = -1.0  # not the row with itself
            best[start : start + chunk] = gram.max(1).values
        out["dec_dec_max_cosine"] = float(best.max())
        out["dec_dec_max_cosine_mean"] = float(best.mean())
    return out


@torch.no_grad()
def core_metrics(
    sae: SparseAutoencoder,
    batches: Iterable[tuple[Tensor, Tensor | None]],
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Every core metric of ``sae`` (eval mode) over ``(x, target)`` batches, target None
    for an SAE. Inputs are taken as the module expects them (already normalised for a
    module inside a run; raw for an exported or loaded one)."""
    was_training = sae.training
    sae.eval()
    acc = MetricAccumulator(sae.d_sae)
    try:
        for x, y in batches:
            if device is not None:
                x = x.to(device)
                y = None if y is None else y.to(device)
            out = sae(x.to(sae.W_enc.dtype))
            acc.add(x if y is None else y, out.x_hat, out.z)
    finally:
        sae.train(was_training)
    if acc.rows == 0:
        return {}
    return {**acc.result(), **weight_metrics(sae), "eval_rows": acc.rows}


def batched(
    x: Tensor, y: Tensor | None, batch_size: int = 4096
) -> Iterable[tuple[Tensor, Tensor | None]]:
    """``(x, y)`` in row chunks."""
    for start in range(0, x.shape[0], batch_size):
        yield (
            x[start : start + batch_size],
            None if y is None else y[start : start + batch_size],
        )
