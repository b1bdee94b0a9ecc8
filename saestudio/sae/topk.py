"""A4 TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders")."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from saestudio.sae.base import ArchDefaults, ForwardOutput, LossSettings, SparseAutoencoder

# Gao et al. §2.3/§A: Adam eps 6.25e-10, lr 2e-4 at 16k latents scaling as 1/√(d_sae/2^14)
# (the trainer applies that scaling when lr is not given), AuxK α = 1/32, k_aux = d_in/2.
DEFAULTS = ArchDefaults(lr=2e-4, sparsity_coefficient=0.0, adam_eps=6.25e-10)


def topk_activation(pre_acts: Tensor, k: int) -> Tensor:
    """Keep each row's k largest pre-activations, ReLU'd; zeros elsewhere. ``[batch, d_sae]``."""
    values, indices = pre_acts.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre_acts).scatter_(-1, indices, values.relu())


def sparse_decode(indices: Tensor, values: Tensor, W_dec: Tensor) -> Tensor:
    """Σ_j values[b, j] · W_dec[indices[b, j]] → ``[batch, d_out]`` without a dense z.

    ``embedding_bag`` touches k decoder rows per input instead of multiplying by a
    ``[batch, d_sae]`` matrix that is almost all zeros, forward and backward (its weight
    gradient is accumulated row by row). Same function as ``z @ W_dec``.
    """
    return F.embedding_bag(indices, W_dec, per_sample_weights=values.to(W_dec.dtype), mode="sum")


def auxk_loss(
    sae: SparseAutoencoder,
    target: Tensor,
    out: ForwardOutput,
    settings: LossSettings,
) -> Tensor:
    """AuxK (Gao et al. §A.2): the top-k_aux *dead* latents reconstruct the residual.

    Normalised by the residual's variance (as sparsify does) so the term is scale-free;
    zero when no latent is dead. Computed without a host sync on the dead count.
    """
    assert settings.dead_mask is not None
    residual = (target - out.x_hat).detach()  # [batch, d_out]
    k_aux = min(settings.aux_k, sae.d_sae)
    masked = out.pre_acts.masked_fill(~settings.dead_mask, float("-inf"))
    values, indices = masked.topk(k_aux, dim=-1, sorted=False)
    # no bias: it models the residual; -inf (live latents) ReLU to 0 weight
    recon = sparse_decode(indices, values.relu(), sae.W_dec)  # [batch, d_out]
    err = (recon - residual).pow(2).sum(dim=-1).mean()
    var = (residual - residual.mean(0)).pow(2).sum(dim=-1).mean().clamp_min(1e-12)
    any_dead = settings.dead_mask.any().to(err.dtype)
    return torch.nan_to_num(err / var, nan=0.0) * any_dead


class TopKSAE(SparseAutoencoder):
    """z = TopK(ReLU(W_enc x + b_enc)); loss = MSE + α·AuxK; unit-norm decoder rows with
    the parallel gradient component removed each step."""

    unit_norm_decoder: ClassVar[bool] = True

    def activate(self, pre_acts: Tensor) -> Tensor:
        return topk_activation(pre_acts, self.cfg.k)

    def forward(self, x: Tensor) -> ForwardOutput:
        """As the base class, but decoding the k active latents sparsely (``sparse_decode``)."""
        pre = self.pre_activations(x)
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        values = values.relu()
        x_hat = sparse_decode(indices, values, self.W_dec).to(pre.dtype) + self.b_dec
        skip = self.skip_path(x)
        if skip is not None:
            x_hat = x_hat + skip
        z = torch.zeros_like(pre).scatter(-1, indices, values)  # dense view, for metrics
        return ForwardOutput(x_hat, z, pre)

    def sparsity_terms(self, out: ForwardOutput, settings: LossSettings) -> dict[str, Tensor]:
        return {}  # sparsity is structural

    def aux_terms(
        self, x: Tensor, target: Tensor, out: ForwardOutput, settings: LossSettings
    ) -> dict[str, tuple[Tensor, float]]:
        if settings.dead_mask is None or settings.aux_k <= 0 or settings.aux_coefficient <= 0:
            return {}
        return {"auxk": (auxk_loss(self, target, out, settings), settings.aux_coefficient)}
