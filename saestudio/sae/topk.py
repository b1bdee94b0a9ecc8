"""A4 TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders")."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from saestudio.sae import sparse_ops
from saestudio.sae.base import (
    ForwardOutput,
    LossOutput,
    LossSettings,
    SparseAutoencoder,
    mse_sum,
)
from saestudio.sae.sparse_ops import Active


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
    # the residual's variance over the whole batch (all ranks' rows under torchrun), so that
    # averaging the ranks' gradients gives the single-process gradient
    mean = settings.batch_mean or (lambda t: t.mean(0))
    var = mean((residual - mean(residual)).pow(2).sum(dim=-1)).clamp_min(1e-12)
    any_dead = settings.dead_mask.any().to(err.dtype)
    return torch.nan_to_num(err / var, nan=0.0) * any_dead


def _aux_selection(pre: Tensor, dead_mask: Tensor, k_aux: int) -> tuple[Active, Tensor] | None:
    """AuxK's per-row top-k_aux among dead latents → (entries, raw pre-activations).

    On the CPU the dead count is free to read, so only the dead columns are searched
    (none dead: nothing to do). On an accelerator, a masked top-k over all latents keeps
    the step free of host syncs; the -inf picks of live latents ReLU to zero weight.
    """
    if pre.device.type == "cpu":
        dead_idx = dead_mask.nonzero().squeeze(1)
        n_dead = dead_idx.numel()
        if n_dead == 0:
            return None
        if n_dead * 4 < pre.shape[1]:
            sub = pre.index_select(1, dead_idx)  # [batch, n_dead]
            raw, j = sub.topk(min(k_aux, n_dead), dim=-1, sorted=False)
            return sparse_ops.per_row(dead_idx[j]), raw.reshape(-1)
    masked = pre.masked_fill(~dead_mask, float("-inf"))
    raw, idx = masked.topk(min(k_aux, pre.shape[1]), dim=-1, sorted=False)
    return sparse_ops.per_row(idx), raw.reshape(-1)


class TopKSAE(SparseAutoencoder):
    """z = TopK(ReLU(W_enc x + b_enc)); loss = MSE + α·AuxK; unit-norm decoder rows with
    the parallel gradient component removed each step.

    Training (``loss`` in train mode with gradients on) takes a sparse path: one dense
    encoder product, under no graph, chooses the active latents; everything after it —
    decoding, AuxK, and the backward of encoder and decoder — touches only those
    entries (:mod:`saestudio.sae.sparse_ops`). The returned ``out.z`` and
    ``out.pre_acts`` are then sparse COO tensors holding the chosen entries.
    ``forward``/``encode`` always return dense tensors.
    """

    unit_norm_decoder: ClassVar[bool] = True

    def activate(self, pre_acts: Tensor) -> Tensor:
        return topk_activation(pre_acts, self.cfg.k)

    def forward(self, x: Tensor) -> ForwardOutput:
        """As the base class, but decoding the k active latents sparsely (``sparse_decode``)."""
        pre = self.pre_activations(x)
        values, indices = sparse_ops.topk_rows(pre, self.cfg.k)
        values = values.relu()
        x_hat = sparse_decode(indices, values, self.W_dec).to(pre.dtype) + self.b_dec
        skip = self.skip_path(x)
        if skip is not None:
            x_hat = x_hat + skip
        z = torch.zeros_like(pre).scatter(-1, indices, values)  # dense view, for metrics
        return ForwardOutput(x_hat, z, pre)

    def sparsity_terms(self, out: ForwardOutput, settings: LossSettings) -> dict[str, Tensor]:
        return {}  # sparsity is structural

    # ---- the sparse training path --------------------------------------------------------
    def _select(self, pre: Tensor) -> tuple[Active, Tensor]:
        """The active latents of a batch and their raw pre-activations (row-major)."""
        raw, idx = sparse_ops.topk_rows(pre, self.cfg.k)
        return sparse_ops.per_row(idx), raw.reshape(-1)

    def loss(self, x: Tensor, target: Tensor | None, settings: LossSettings) -> LossOutput:
        if not (self.training and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            return super().loss(x, target, settings)
        return self._sparse_loss(x, x if target is None else target, settings)

    def _sparse_loss(self, x: Tensor, target: Tensor, settings: LossSettings) -> LossOutput:
        """Same value and gradients as ``SparseAutoencoder.loss`` (tests/unit/test_fast_paths)."""
        use_aux = (
            settings.dead_mask is not None and settings.aux_k > 0 and settings.aux_coefficient > 0
        )
        enc_in = self.encoder_input(x)  # x − centre (or − b_dec): graph kept for b_dec
        with torch.no_grad():  # the one dense product; it only chooses entries
            if x.device.type == "cpu":  # reuse the buffer (no page faults every step)
                enc = enc_in.detach()
                pre = self.workspace("pre", (x.shape[0], self.d_sae), x)  # [batch, d_sae]
                torch.addmm(self.b_enc.to(x.dtype), enc, self.W_enc.to(x.dtype), out=pre)
            else:  # accelerators: keep autocast (out= tensors are not autocast)
                pre = self.pre_activations(x)
            main, main_raw = self._select(pre)
            aux = None
            if use_aux:
                assert settings.dead_mask is not None
                aux = _aux_selection(pre, settings.dead_mask, settings.aux_k)
            del pre
            main_plan = sparse_ops.column_plan(main, self.d_sae)  # shared by both backwards
            aux_plan = None if aux is None else sparse_ops.column_plan(aux[0], self.d_sae)
        main_pre = sparse_ops.gather_preacts(
            enc_in, self.W_enc, self.b_enc, main, main_plan, main_raw
        )
        values = main_pre.relu()
        x_hat = sparse_ops.coo_decode(main, main_plan, values, self.W_dec).to(x.dtype)
        x_hat = x_hat + self.b_dec
        skip = self.skip_path(x)
        if skip is not None:
            x_hat = x_hat + skip
        mse = mse_sum(target, x_hat)
        loss, terms = mse, {"mse": mse}
        if use_aux:
            auxk = x_hat.new_zeros(())
            if aux is not None and aux_plan is not None:
                aux_pre = sparse_ops.gather_preacts(
                    enc_in, self.W_enc, self.b_enc, aux[0], aux_plan, aux[1]
                )
                residual = (target - x_hat).detach()
                recon = sparse_ops.coo_decode(aux[0], aux_plan, aux_pre.relu(), self.W_dec)
                auxk = auxk_term(recon, residual, settings)
            loss = loss + settings.aux_coefficient * auxk
            terms["auxk"] = auxk
        return LossOutput(loss, terms, sparse_output(x_hat, main, values, main_pre, self.d_sae))

    def aux_terms(
        self, x: Tensor, target: Tensor, out: ForwardOutput, settings: LossSettings
    ) -> dict[str, tuple[Tensor, float]]:
        if settings.dead_mask is None or settings.aux_k <= 0 or settings.aux_coefficient <= 0:
            return {}
        return {"auxk": (auxk_loss(self, target, out, settings), settings.aux_coefficient)}


def auxk_term(recon: Tensor, residual: Tensor, settings: LossSettings) -> Tensor:
    """AuxK's normalised error ‖ê − e‖² / Var(e) of the dead latents' reconstruction ê of
    the residual e (Gao et al., §A.2), over the global batch under torchrun. On an
    accelerator the dead-latent selection is masked (no host sync), so the term is zeroed
    when nothing is dead."""
    err = (recon.to(residual.dtype) - residual).pow(2).sum(dim=-1).mean()
    mean = settings.batch_mean or (lambda t: t.mean(0))  # global batch (torchrun)
    var = mean((residual - mean(residual)).pow(2).sum(dim=-1)).clamp_min(1e-12)
    term = torch.nan_to_num(err / var, nan=0.0)
    if residual.device.type != "cpu":
        assert settings.dead_mask is not None
        term = term * settings.dead_mask.any().to(term.dtype)
    return term


def sparse_output(
    x_hat: Tensor, main: Active, values: Tensor, main_pre: Tensor, d_sae: int
) -> ForwardOutput:
    """The sparse training path's ForwardOutput: z and pre_acts as ``[batch, d_sae]``
    COO tensors over the kept entries."""
    z = sparse_ops.to_sparse_latents(main, values, d_sae)
    pre_acts = torch.sparse_coo_tensor(
        z._indices(), main_pre.detach(), z.shape, check_invariants=False
    )
    return ForwardOutput(x_hat, z, pre_acts)
