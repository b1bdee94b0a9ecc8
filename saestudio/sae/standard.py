"""A1 standard (SAELens) and A2 standard_anthropic SAEs: ReLU + L1 sparsity."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from saestudio.sae.base import (
    ForwardOutput,
    LossOutput,
    LossSettings,
    SparseAutoencoder,
    mse_sum,
)


class _ReLUEncodeDecode(torch.autograd.Function):
    """x̂ = ReLU(x·W_enc + b_enc)·W_dec + b_dec and L1 = mean_b Σ_i z_bi‖W_dec,i‖, fused.

    The same function as the autograd graph of the plain path, with the elementwise work
    on ``[batch, d_sae]`` cut to the minimum: ReLU in place on the pre-activations, the
    L1 term as a matrix-vector product, its gradient folded into the bias of the
    ``∂z`` product, and the column sums (``∂b_enc``, the L1 part of ``∂W_dec``) taken by
    the weight-gradient products through an extra column of ones. What remains is the
    matrix products plus one ReLU and one ReLU-backward pass.
    """

    @staticmethod
    def forward(
        x: Tensor,
        W_enc: Tensor,
        b_enc: Tensor,
        W_dec: Tensor,
        b_dec: Tensor,
        scratch: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        z = torch.addmm(b_enc, x, W_enc).relu_()  # [batch, d_sae]
        x_hat = torch.addmm(b_dec, z, W_dec)  # [batch, d_out]
        w_norm = W_dec.norm(dim=1)  # [d_sae]
        l1 = (z @ w_norm).mean()
        return x_hat, l1, z

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, W_enc, _, W_dec, _, scratch = inputs
        _, _, z = output
        ctx.mark_non_differentiable(z)
        ctx.save_for_backward(x, W_enc, W_dec, z)
        ctx.scratch = scratch  # a reused [batch, d_sae] buffer for ∂z (CPU), or None

    @staticmethod
    def backward(
        ctx: Any, grad_x_hat: Tensor, grad_l1: Tensor, _: Any
    ) -> tuple[Tensor | None, ...]:
        x, W_enc, W_dec, z = ctx.saved_tensors
        batch = z.shape[0]
        w_norm = W_dec.norm(dim=1)
        grad_x_hat = grad_x_hat.contiguous()
        ones = grad_x_hat.new_ones(batch, 1)
        # ∂z = ∂x̂·W_decᵀ + (∂L1/batch)·‖W_dec‖, then through the ReLU
        l1_grad = w_norm * (grad_l1 / batch)
        scratch = ctx.scratch
        if scratch is not None and scratch.shape == z.shape:  # no fresh 200 MB to fault in
            grad_z = torch.addmm(l1_grad, grad_x_hat, W_dec.t(), out=scratch)
            grad_pre = torch.ops.aten.threshold_backward.grad_input(grad_z, z, 0, grad_input=grad_z)
        else:
            grad_z = torch.addmm(l1_grad, grad_x_hat, W_dec.t())
            grad_pre = torch.ops.aten.threshold_backward(grad_z, z, 0)
            del grad_z
        # ∂W_dec = zᵀ·∂x̂ + (∂L1/batch)·(Σ_b z_b)·W_dec/‖W_dec‖; Σ_b z_b from the ones column
        zt_g = z.t() @ torch.cat([grad_x_hat, ones], dim=1)  # [d_sae, d_out + 1]
        scale = (grad_l1 / batch) * zt_g[:, -1] / w_norm.clamp_min(1e-12)
        grad_W_dec = torch.addcmul(zt_g[:, :-1], W_dec, scale.unsqueeze(1))
        grad_b_dec = grad_x_hat.sum(0)
        # ∂W_enc = xᵀ·∂pre and ∂b_enc = Σ_b ∂pre_b in one product
        xt_g = torch.cat([x, ones], dim=1).t() @ grad_pre  # [d_in + 1, d_sae]
        grad_x = grad_pre @ W_enc.t() if ctx.needs_input_grad[0] else None
        return grad_x, xt_g[:-1], xt_g[-1], grad_W_dec, grad_b_dec, None


class StandardSAE(SparseAutoencoder):
    """ReLU SAE; loss = MSE + λ·Σ_i z_i‖W_dec,i‖ (L1 weighted by decoder norm).

    Weighting by the decoder norm stops the model from shrinking z and growing W_dec to
    dodge the penalty (Anthropic, April 2024 update), so no norm constraint is needed.

    Training (``loss`` in train mode with gradients on) runs the fused
    :class:`_ReLUEncodeDecode`; its ``out.pre_acts`` is then ``z`` itself (the ReLU runs
    in place, the negative pre-activations are not kept).
    """

    default_decoder_init_norm: ClassVar[float] = 0.1  # SAELens decoder_init_norm

    def activate(self, pre_acts: Tensor) -> Tensor:
        return torch.relu(pre_acts)

    def sparsity_terms(self, out: ForwardOutput, settings: LossSettings) -> dict[str, Tensor]:
        w_norm = self.W_dec.norm(dim=1)  # [d_sae]
        return {"l1": (out.z * w_norm).sum(dim=-1).mean()}

    def loss(self, x: Tensor, target: Tensor | None, settings: LossSettings) -> LossOutput:
        if not (self.training and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            return super().loss(x, target, settings)
        target = x if target is None else target
        enc_in = self.encoder_input(x)
        scratch = (
            self.workspace("grad_z", (x.shape[0], self.d_sae), x)
            if x.device.type == "cpu"
            else None
        )
        x_hat, l1, z = _ReLUEncodeDecode.apply(
            enc_in, self.W_enc, self.b_enc, self.W_dec, self.b_dec, scratch
        )
        skip = self.skip_path(x)
        if skip is not None:
            x_hat = x_hat + skip
        mse = mse_sum(target, x_hat)
        terms = {"l1": l1}
        loss = mse + self.weighted_sparsity(terms, settings).to(mse)
        return LossOutput(loss, {"mse": mse, **terms}, ForwardOutput(x_hat, z, z))


class AnthropicSAE(StandardSAE):
    """Towards Monosemanticity (2023): b_dec subtracted from the input before encoding,
    decoder rows kept at unit norm by projection after every step (so the L1 weight is 1)."""

    subtract_b_dec_from_input: ClassVar[bool] = True
    unit_norm_decoder: ClassVar[bool] = True
    default_decoder_init_norm: ClassVar[float] = 1.0
