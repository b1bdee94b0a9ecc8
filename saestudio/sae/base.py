"""The interface every architecture shares.

Parameter layout follows SAELens so exports are a rename-free copy:
``W_enc[d_in, d_sae]``, ``b_enc[d_sae]``, ``W_dec[d_sae, d_out]``, ``b_dec[d_out]`` and,
with a skip path, ``W_skip[d_out, d_in]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from saestudio.sae.config import SAEConfig


class ForwardOutput(NamedTuple):
    """What one forward pass produces; always these three, whatever the architecture."""

    x_hat: Tensor
    """Reconstruction ``[batch, d_out]`` (the target hook's activation for transcoders)."""
    z: Tensor
    """Latent activations ``[batch, d_sae]`` (zeros where a latent is off)."""
    pre_acts: Tensor
    """Encoder pre-activations ``[batch, d_sae]``, before the nonlinearity."""


class LossOutput(NamedTuple):
    """A training loss split into named terms."""

    loss: Tensor
    """Scalar that the optimiser minimises (sum of the weighted terms)."""
    terms: dict[str, Tensor]
    """Unweighted scalar terms: always ``mse``; plus ``l1``, ``l0`` or ``auxk`` by architecture."""
    out: ForwardOutput


@dataclass
class LossSettings:
    """Per-step inputs to ``loss`` that the trainer owns (they change over a run)."""

    sparsity_coefficient: float = 0.0
    l0_target: float | None = None
    dead_mask: Tensor | None = None  # [d_sae] bool, latents dead for dead_after_tokens
    aux_k: int = 0
    aux_coefficient: float = 0.0
    batch_mean: Callable[[Tensor], Tensor] | None = None
    """Mean over dim 0 of the whole batch; under torchrun, of the global batch across ranks."""


def mse_sum(target: Tensor, x_hat: Tensor) -> Tensor:
    """SPEC §3 MSE: mean over the batch of Σ_d (x − x̂)²."""
    return (x_hat - target).pow(2).sum(dim=-1).mean()


class SparseAutoencoder(nn.Module):
    """Base class: linear encoder, an activation chosen by the subclass, linear decoder.

    Subclasses implement :meth:`activate` and :meth:`sparsity_terms`; everything else
    (init, decoding, skip path, decoder-norm handling, loss assembly) is shared.
    """

    subtract_b_dec_from_input: ClassVar[bool] = False
    """Anthropic-style: encode ``x − b_dec`` (SAELens ``apply_b_dec_to_input``)."""
    unit_norm_decoder: ClassVar[bool] = False
    """Keep decoder rows at unit norm (projection after every optimiser step)."""
    default_decoder_init_norm: ClassVar[float] = 1.0
    init_biases_from_data: ClassVar[bool] = True
    """Start from the data (every architecture): see :meth:`init_biases_from_mean`."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        if cfg.d_in is None or cfg.d_sae is None or cfg.d_out is None:
            raise ValueError("SAEConfig must be resolved (d_in, d_sae, d_out) before building")
        self.cfg = cfg
        self.d_in, self.d_sae, self.d_out = cfg.d_in, cfg.d_sae, cfg.d_out
        self.W_enc = nn.Parameter(torch.empty(self.d_in, self.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae))
        self.W_dec = nn.Parameter(torch.empty(self.d_sae, self.d_out))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out))
        # a fixed (not learned) centre subtracted from the input before the encoder and the
        # skip path: the data's mean at init (see init_biases_from_mean); folded into b_enc
        # (and b_dec) on export (saelens_format._export_tensors), so files never carry it
        self.input_centre: Tensor
        self.register_buffer("input_centre", torch.zeros(self.d_in))
        self.W_skip: nn.Parameter | None = None
        if cfg.has_skip:
            # Paulo et al. 2025: a learned linear path, zero at init (never a fixed mix; erratum 3).
            self.W_skip = nn.Parameter(torch.zeros(self.d_out, self.d_in))
        self.reset_parameters()

    # ---- init -------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Decoder rows random with a fixed norm; encoder = decoder transpose (OpenAI TopK §A)."""
        norm = self.cfg.decoder_init_norm or self.default_decoder_init_norm
        w = torch.randn(self.d_sae, self.d_out)
        self.W_dec.copy_(w / w.norm(dim=1, keepdim=True) * norm)
        if self.d_in == self.d_out:
            self.W_enc.copy_(self.W_dec.T)
        else:  # transcoders: no transpose exists; same scale, independent directions
            w = torch.randn(self.d_in, self.d_sae)
            self.W_enc.copy_(w / w.norm(dim=0, keepdim=True) * norm)
        self.b_enc.zero_()
        self.b_dec.zero_()

    def workspace(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A scratch tensor kept between training steps (not state: never saved).

        A fresh ``[batch, d_sae]`` result is ~200 MB at batch 4096, d_sae 12288; the
        allocator hands such blocks back to the OS and every step pays to fault the
        pages in again (≈ 20 % of the encoder product's time on CPU). Only for tensors
        that do not outlive the step that filled them.
        """
        spaces: dict[str, Tensor] = self.__dict__.setdefault("_workspaces", {})
        buf = spaces.get(name)
        if (
            buf is None
            or buf.shape != shape
            or buf.dtype != like.dtype
            or buf.device != like.device
        ):
            buf = spaces[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # checkpoints from before the centre existed encoded the raw input
        state_dict.setdefault(prefix + "input_centre", torch.zeros(self.d_in))
        super()._load_from_state_dict(state_dict, prefix, *args)

    @torch.no_grad()
    def init_biases_from_mean(self, mean_in: Tensor, mean_out: Tensor) -> None:
        """b_dec = E[target] and the encoder's input centred on E[x], from a data sample.

        The mean, not the geometric median (Towards Monosemanticity) nor the median (Gao
        et al. §A.1): the loss is squared error, and the mean is the constant that minimises
        it, so at step 0 an SAE whose latents are all off already has FVU = 1 (on the
        sample) whatever the data's offset; a median would start above 1 by
        ‖median − mean‖² / variance. It is also one streaming pass, where the geometric
        median needs Weiszfeld iterations.

        The encoder sees x − E[x] (``input_centre``, fixed, not learned), or x − b_dec for
        the Anthropic variant: with raw inputs a large offset μ enters every encoder
        gradient (∂W_enc = xᵀ·∂pre) and each Adam step moves the pre-activations by
        ~lr·Σ|μ_i|, noise that kills the latents of an L1 SAE (held-out FVU above 1).
        """
        self.b_dec.copy_(mean_out.to(self.b_dec))
        self.b_enc.zero_()
        if not self.subtract_b_dec_from_input:
            self.input_centre.copy_(mean_in.to(self.input_centre))

    @torch.no_grad()
    def init_encoder_scale(self, x: Tensor, target: Tensor) -> None:
        """Scale W_enc so the first reconstruction is the least-squares best multiple of
        itself: α = ⟨y − b_dec, r⟩ / ‖r‖², r = x̂ − b_dec at α = 1, clamped to (0, 1].

        Where every latent with a positive pre-activation fires (ReLU, JumpReLU at its tiny
        θ₀), d_sae random unit-norm rows sum to a reconstruction many times too large:
        held-out FVU 3–5 at the first evaluation, worse than the mean. z is homogeneous
        in W_enc here (b_enc = 0; JumpReLU's θ₀ ≈ 0), so α·W_enc gives α·r and an FVU at
        most 1 on the sample. TopK-style SAEs keep k latents and start below 1 anyway.
        """
        if self.cfg.uses_k:
            return
        r = self(x).x_hat - self.b_dec
        skip = self.skip_path(x)
        if skip is not None:
            r = r - skip
        y = target - self.b_dec
        alpha = float((y * r).sum() / r.pow(2).sum().clamp_min(1e-12))
        if math.isfinite(alpha):
            self.W_enc.mul_(min(max(alpha, 1e-3), 1.0))

    def encoder_input(self, x: Tensor) -> Tensor:
        """What the encoder multiplies: x − b_dec (Anthropic) or x − ``input_centre``."""
        if self.subtract_b_dec_from_input:
            return x - self.b_dec
        return x - self.input_centre.to(x.dtype)

    # ---- the function -------------------------------------------------------------------
    def pre_activations(self, x: Tensor) -> Tensor:
        """Encoder pre-activations ``[batch, d_sae]``."""
        x = self.encoder_input(x)
        # the bias goes into the product kernel (no separate add over [batch, d_sae])
        return torch.addmm(self.b_enc, x, self.W_enc)

    def activate(self, pre_acts: Tensor) -> Tensor:
        """The nonlinearity: ``[batch, d_sae]`` pre-activations → latents."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """``[batch, d_in]`` → latents ``[batch, d_sae]``."""
        return self.activate(self.pre_activations(x))

    def decode(self, z: Tensor) -> Tensor:
        """Latents ``[batch, d_sae]`` → ``[batch, d_out]`` (without the skip path)."""
        return z @ self.W_dec + self.b_dec

    def skip_path(self, x: Tensor) -> Tensor | None:
        if self.W_skip is None:
            return None
        return (x - self.input_centre.to(x.dtype)) @ self.W_skip.T

    def forward(self, x: Tensor) -> ForwardOutput:
        pre = self.pre_activations(x)
        z = self.activate(pre)
        x_hat = self.decode(z)
        skip = self.skip_path(x)
        if skip is not None:
            x_hat = x_hat + skip
        return ForwardOutput(x_hat, z, pre)

    # ---- training -----------------------------------------------------------------------
    def sparsity_terms(self, out: ForwardOutput, settings: LossSettings) -> dict[str, Tensor]:
        """Unweighted sparsity terms; the weighted sum goes to the loss as ``sparsity``."""
        raise NotImplementedError

    def weighted_sparsity(self, terms: dict[str, Tensor], settings: LossSettings) -> Tensor:
        return settings.sparsity_coefficient * sum(terms.values(), torch.zeros(()))

    def loss(self, x: Tensor, target: Tensor | None, settings: LossSettings) -> LossOutput:
        """Training loss on a batch. ``target`` is the output hook for transcoders, else x."""
        target = x if target is None else target
        out = self(x)
        mse = mse_sum(target, out.x_hat)
        terms = self.sparsity_terms(out, settings)
        loss = mse + self.weighted_sparsity(terms, settings).to(mse)
        aux = self.aux_terms(x, target, out, settings)
        for name, (value, weight) in aux.items():
            loss = loss + weight * value
            terms[name] = value
        return LossOutput(loss, {"mse": mse, **terms}, out)

    def aux_terms(
        self, x: Tensor, target: Tensor, out: ForwardOutput, settings: LossSettings
    ) -> dict[str, tuple[Tensor, float]]:
        """Auxiliary losses as ``name: (value, weight)``; none by default."""
        return {}

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component parallel to each decoder row (OpenAI TopK §A.4).

        With unit-norm rows kept by projection, that component only changes the norm,
        which the projection undoes anyway; removing it keeps Adam's moments honest.
        """
        if not self.unit_norm_decoder or self.W_dec.grad is None:
            return
        W, g = self.W_dec.detach(), self.W_dec.grad
        # g −= (g·w) w with w = W/‖W‖, as per-row dot products and one in-place update
        # (no [d_sae, d_out] temporaries)
        dot = torch.bmm(g.unsqueeze(1), W.unsqueeze(2)).view(-1)  # [d_sae]
        coef = dot / W.norm(dim=1).square().clamp_min(1e-24)
        g.addcmul_(W, coef.unsqueeze(1), value=-1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Project decoder rows back to unit norm (erratum 5: every step, not once)."""
        if self.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def after_optimizer_step(self) -> None:
        """Hook for constraints that hold after every update (norms, threshold range)."""
        self.normalize_decoder()

    # ---- export helpers -------------------------------------------------------------------
    def inference_threshold(self) -> Tensor | None:
        """Per-latent threshold for a JumpReLU-style export, or None."""
        return None

    @torch.no_grad()
    def fold_input_scaling(self, scale_in: float, scale_out: float) -> None:
        """Fold ``x ↦ s·x`` normalisation into the weights so raw activations go in.

        Trained on x·s_in (target·s_out): W_enc·s_in, W_dec/s_out, b_dec/s_out and
        W_skip·s_in/s_out give the same function on raw inputs, with the input centre
        c/s_in. Thresholds act on pre-activations, which do not change.
        """
        if self.subtract_b_dec_from_input and not math.isclose(scale_in, scale_out):
            raise ValueError("input and output scales must match when b_dec is subtracted")
        self.W_enc.mul_(scale_in)
        self.input_centre.div_(scale_in)
        self.W_dec.div_(scale_out)
        self.b_dec.div_(scale_out)
        if self.W_skip is not None:
            self.W_skip.mul_(scale_in / scale_out)
