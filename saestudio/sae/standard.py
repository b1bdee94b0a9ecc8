"""A1 standard (SAELens) and A2 standard_anthropic SAEs: ReLU + L1 sparsity."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from saestudio.sae.base import ArchDefaults, ForwardOutput, LossSettings, SparseAutoencoder

# SAELens: lr 4e-4, λ warm-up over the first 5 % of steps, LR decay over the last 20 %.
# λ = 5 is Anthropic's April-2024 value for inputs scaled to E‖x‖ = √d_in.
DEFAULTS = ArchDefaults(
    lr=4e-4,
    sparsity_coefficient=5.0,
    sparsity_warmup_fraction=0.05,
    lr_decay_fraction=0.2,
    normalize_activations="expected_average_only_in",
)


class StandardSAE(SparseAutoencoder):
    """ReLU SAE; loss = MSE + λ·Σ_i z_i‖W_dec,i‖ (L1 weighted by decoder norm).

    Weighting by the decoder norm stops the model from shrinking z and growing W_dec to
    dodge the penalty (Anthropic, April 2024 update), so no norm constraint is needed.
    """

    default_decoder_init_norm: ClassVar[float] = 0.1  # SAELens decoder_init_norm

    def activate(self, pre_acts: Tensor) -> Tensor:
        return torch.relu(pre_acts)

    def sparsity_terms(self, out: ForwardOutput, settings: LossSettings) -> dict[str, Tensor]:
        w_norm = self.W_dec.norm(dim=1)  # [d_sae]
        return {"l1": (out.z * w_norm).sum(dim=-1).mean()}


class AnthropicSAE(StandardSAE):
    """Towards Monosemanticity (2023): b_dec subtracted from the input before encoding,
    decoder rows kept at unit norm by projection after every step (so the L1 weight is 1)."""

    subtract_b_dec_from_input: ClassVar[bool] = True
    unit_norm_decoder: ClassVar[bool] = True
    default_decoder_init_norm: ClassVar[float] = 1.0
