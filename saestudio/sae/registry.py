"""Architecture name → builder. Adding one: its own file (the class), its defaults in
:mod:`saestudio.sae.defaults`, plus a line here.

Skip SAEs (A6) and transcoders (A7) have no class of their own: the skip path
(``W_skip``, zero at init) and a ``d_out`` different from ``d_in`` live in the base class
(``SparseAutoencoder``), so each is the class of its activation, built by
:func:`build_by_activation`.

- A6 skip SAE: x̂ = W_dec·z + b_dec + W_skip·x with a learned W_skip — never the seed's
  fixed mix of the input into the output (erratum 3), which makes every reconstruction
  metric meaningless.
- A7 transcoder (Dunefsky et al. 2024): reads one hook (e.g. the MLP input) and
  reconstructs another (the MLP output), trained on paired activations (erratum 4); any
  activation, and an optional learned skip path (``skip=True``; Paulo et al. 2025). The
  loss (``SparseAutoencoder.loss``) takes the target hook's activation.
"""

from __future__ import annotations

from collections.abc import Callable

from saestudio.sae import batchtopk, jumprelu, matryoshka, standard, topk
from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.config import Activation, SAEConfig

BY_ACTIVATION: dict[Activation, type[SparseAutoencoder]] = {
    "relu": standard.StandardSAE,
    "jumprelu": jumprelu.JumpReLUSAE,
    "topk": topk.TopKSAE,
    "batchtopk": batchtopk.BatchTopKSAE,
    "matryoshka_batchtopk": matryoshka.MatryoshkaBatchTopKSAE,
}
"""The class that implements each activation (and so each skip SAE and transcoder)."""


def build_by_activation(cfg: SAEConfig) -> SparseAutoencoder:
    """A skip SAE or transcoder: the class of its activation (ReLU/L1 unless given)."""
    return BY_ACTIVATION[cfg.activation_fn](cfg)


REGISTRY: dict[str, Callable[[SAEConfig], SparseAutoencoder]] = {
    "standard": standard.StandardSAE,
    "standard_anthropic": standard.AnthropicSAE,
    "jumprelu": jumprelu.JumpReLUSAE,
    "topk": topk.TopKSAE,
    "batchtopk": batchtopk.BatchTopKSAE,
    "matryoshka_batchtopk": matryoshka.MatryoshkaBatchTopKSAE,
    "skip": build_by_activation,
    "transcoder": build_by_activation,
}
"""Architecture name → builder; every name of ``SAEConfig.architecture``."""


def build_sae(cfg: SAEConfig) -> SparseAutoencoder:
    """Build an SAE from a resolved config (d_in, d_sae, d_out known)."""
    return REGISTRY[cfg.architecture](cfg)


__all__ = ["BY_ACTIVATION", "REGISTRY", "build_by_activation", "build_sae"]
