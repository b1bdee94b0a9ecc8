"""A3 JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"; Gemma Scope)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from saestudio.sae.base import ForwardOutput, LossSettings, SparseAutoencoder
from saestudio.sae.config import SAEConfig


def _rectangle(u: Tensor) -> Tensor:
    """Kernel K(u) = 1[|u| < ½] of the straight-through estimator."""
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """z = π·H(π − θ).  ∂z/∂π = H(π − θ);  ∂z/∂θ = −(θ/ε)·K((π − θ)/ε)  ("Jumping Ahead" eq. 11)."""

    @staticmethod
    def forward(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        pre, threshold, bandwidth = inputs
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = (pre > threshold).to(grad.dtype) * grad
        grad_theta = (-(threshold / eps) * _rectangle((pre - threshold) / eps) * grad).sum(0)
        return grad_pre, grad_theta, None


class _Step(torch.autograd.Function):
    """H(π − θ) with ∂H/∂θ = −(1/ε)·K((π − θ)/ε) and no gradient to π (eq. 12)."""

    @staticmethod
    def forward(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        pre, threshold, bandwidth = inputs
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = (-(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad).sum(0)
        return None, grad_theta, None


def jumprelu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    return _Step.apply(pre, threshold, bandwidth)


class JumpReLUSAE(SparseAutoencoder):
    """z = π·H(π − θ) with a learned per-latent threshold θ; loss = MSE + λ·L0.

    θ is a parameter in its own right rather than exp(log θ): the straight-through
    gradients above are with respect to θ, and with Adam a log parameterisation moves
    a 0.001 init by only a factor e^(lr·steps), so short runs' L0 would barely respond
    to λ (SAELens 6 made the same change). θ is clamped to ≥ 0 after each step.

    L0 target mode (``l0_target`` set): the penalty is λ·s·|L0/target − 1|, two-sided (it
    pushes θ down when L0 is below the target), with a multiplier s adapted every
    training step: log s += η·(|L0/target − 1| − 0.02). A fixed penalty settles wherever
    the MSE and L0 gradients balance — a deviation that depends on λ and the data; s
    grows until the deviation is within 2 %, then relaxes, so L0 holds near the target
    whatever λ. log s is a buffer: checkpoints carry it, a resumed run continues exactly.
    """

    unit_norm_decoder: ClassVar[bool] = True  # Gemma Scope keeps decoder rows unit norm
    l0_control_rate: ClassVar[float] = 0.05  # η: log s moves at most 0.05 per step

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.full((self.d_sae,), cfg.jumprelu_init_threshold))
        self.l0_log_scale: Tensor
        self.register_buffer("l0_log_scale", torch.zeros(()))

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kw: Any) -> None:
        # checkpoints from before the L0 controller existed: start it at s = 1
        state_dict.setdefault(prefix + "l0_log_scale", torch.zeros(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)

    def activate(self, pre_acts: Tensor) -> Tensor:
        return jumprelu(pre_acts, self.threshold.to(pre_acts.dtype), self.cfg.jumprelu_bandwidth)

    def sparsity_terms(self, out: ForwardOutput, settings: LossSettings) -> dict[str, Tensor]:
        th = self.threshold.to(out.pre_acts.dtype)
        l0 = step(out.pre_acts, th, self.cfg.jumprelu_bandwidth).sum(dim=-1).mean()
        if settings.l0_target is not None:
            if self.training and torch.is_grad_enabled():
                # the whole batch's L0 (all ranks' rows under torchrun) drives the multiplier
                mean = settings.batch_mean or (lambda t: t.mean(0))
                self._control_l0(mean(l0.detach().reshape(1)).reshape(()), settings.l0_target)
            deviation = (l0 / settings.l0_target - 1.0).abs()
            return {"l0_deviation": self.l0_log_scale.exp().to(l0.dtype) * deviation}
        return {"l0": l0}

    @torch.no_grad()
    def _control_l0(self, l0: Tensor, target: float) -> None:
        """log s up while |L0/target − 1| > 2 %, down inside that band (no host sync)."""
        error = (l0.float() / target - 1.0).abs().clamp(max=1.0) - 0.02
        self.l0_log_scale.add_(self.l0_control_rate * error).clamp_(-10.0, 30.0)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.threshold.clamp_(min=0.0)

    def inference_threshold(self) -> Tensor:
        return self.threshold.detach()
