"""Architecture name → builder and defaults. Adding one: its own file, plus a line here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

from saestudio.sae import batchtopk, jumprelu, skip, standard, topk, transcoder
from saestudio.sae.base import ArchDefaults, SparseAutoencoder
from saestudio.sae.config import Activation, SAEConfig


class ArchEntry(NamedTuple):
    build: Callable[[SAEConfig], SparseAutoencoder]
    defaults: ArchDefaults


REGISTRY: dict[str, ArchEntry] = {
    "standard": ArchEntry(standard.StandardSAE, standard.DEFAULTS),
    "standard_anthropic": ArchEntry(standard.AnthropicSAE, standard.DEFAULTS),
    "jumprelu": ArchEntry(jumprelu.JumpReLUSAE, jumprelu.DEFAULTS),
    "topk": ArchEntry(topk.TopKSAE, topk.DEFAULTS),
    "batchtopk": ArchEntry(batchtopk.BatchTopKSAE, batchtopk.DEFAULTS),
    "skip": ArchEntry(skip.build, skip.DEFAULTS),
    "transcoder": ArchEntry(transcoder.build, transcoder.DEFAULTS),
}

_BY_ACTIVATION: dict[str, type[SparseAutoencoder]] = {
    "relu": standard.StandardSAE,
    "jumprelu": jumprelu.JumpReLUSAE,
    "topk": topk.TopKSAE,
    "batchtopk": batchtopk.BatchTopKSAE,
}


def class_for_activation(activation: Activation) -> type[SparseAutoencoder]:
    return _BY_ACTIVATION[activation]


def build_sae(cfg: SAEConfig) -> SparseAutoencoder:
    """Build an SAE from a resolved config (d_in, d_sae, d_out known)."""
    return REGISTRY[cfg.architecture].build(cfg)


def defaults_for(cfg: SAEConfig) -> ArchDefaults:
    """Defaults of the architecture; skip SAEs and transcoders take the activation's
    optimiser settings (e.g. JumpReLU's β1 = 0) and their own λ and lr."""
    base = REGISTRY[cfg.architecture].defaults
    if cfg.architecture in ("skip", "transcoder") and cfg.activation_fn != "relu":
        act = REGISTRY[cfg.activation_fn].defaults
        return replace(act, lr=base.lr if cfg.activation_fn == "jumprelu" else act.lr)
    return base
