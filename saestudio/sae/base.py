"""The interface every architecture shares.

Parameter layout follows SAELens so exports are a rename-free copy:
``W_enc[d_in, d_sae]``, ``b_enc[d_sae]``, ``W_dec[d_sae, d_out]``, ``b_dec[d_out]`` and,
with a skip path, ``W_skip[d_out, d_in]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

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
    init_biases_from_data: ClassVar[bool] = False
    """Start from the data: see :meth:`init_biases_from_mean` (TopK family)."""

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

    @torch.no_grad()
    def init_biases_from_mean(self, mean_in: Tensor, mean_out: Tensor) -> None:
        """b_dec = E[target] and b_enc = −E[x]·W_enc, from a data sample.

        The pre-activations then start centred on the data instead of on its (large) mean
        direction — at init the same as encoding x − b_dec (Gao et al. §A.1 initialise
        b_pre to the data's median; sparsify sets b_dec to the first batch's mean).
        """
        self.b_dec.copy_(mean_out.to(self.b_dec))
        if not self.subtract_b_dec_from_input:
            self.b_enc.copy_(-(mean_in.to(self.W_enc) @ self.W_enc))

    # ---- the function -------------------------------------------------------------------
    def pre_activations(self, x: Tensor) -> Tensor:
        """Encoder pre-activations ``[batch, d_sae]``."""
        if self.subtract_b_dec_from_input:
            x = x - self.b_dec
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
        return None if self.W_skip is None else x @ self.W_skip.T

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
        W_skip·s_in/s_out give the same function on raw inputs. Thresholds act on
        pre-activations, which do not change.
        """
        if self.subtract_b_dec_from_input and not math.isclose(scale_in, scale_out):
            raise ValueError("input and output scales must match when b_dec is subtracted")
        self.W_enc.mul_(scale_in)
        self.W_dec.div_(scale_out)
        self.b_dec.div_(scale_out)
        if self.W_skip is not None:
            self.W_skip.mul_(scale_in / scale_out)
