"""A7 transcoder (Dunefsky et al. 2024): reads one hook (e.g. MLP input) and
reconstructs another (MLP output), trained on paired activations (erratum 4).

``d_out`` may differ from ``d_in``. Any activation (ReLU/L1, TopK, BatchTopK, JumpReLU)
and an optional learned skip path (``skip=True``; Paulo et al. 2025). The loss in
``SparseAutoencoder.loss`` takes the target hook's activation; decoding happens once.
"""

from __future__ import annotations

from saestudio.sae.base import ArchDefaults, SparseAutoencoder
from saestudio.sae.config import SAEConfig

# Dunefsky et al.: λ ≈ 1.4e-4, lr 4e-4, ×32 expansion, batch 4096.
DEFAULTS = ArchDefaults(lr=4e-4, sparsity_coefficient=1.4e-4, sparsity_warmup_fraction=0.05)


def build(cfg: SAEConfig) -> SparseAutoencoder:
    from saestudio.sae.registry import class_for_activation

    return class_for_activation(cfg.activation_fn)(cfg)
