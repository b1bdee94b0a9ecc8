"""SAE architectures: one interface (``encode``/``decode``/``forward``/``loss``), a registry,
and SAELens-format saving and loading.

The names below load on first use (PEP 562), so importing a torch-free submodule
(``saestudio.sae.config``, ``saestudio.sae.defaults``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from saestudio._lazy import lazy_attributes

if TYPE_CHECKING:
    from saestudio.sae.base import ForwardOutput, LossOutput, LossSettings, SparseAutoencoder
    from saestudio.sae.config import ARCHITECTURES, SAEConfig
    from saestudio.sae.defaults import defaults_for
    from saestudio.sae.registry import build_sae
    from saestudio.sae.saelens_format import save_saelens
    from saestudio.sae.saelens_load import load_saelens

_WHERE = {
    "ARCHITECTURES": "config",
    "ForwardOutput": "base",
    "LossOutput": "base",
    "LossSettings": "base",
    "SAEConfig": "config",
    "SparseAutoencoder": "base",
    "build_sae": "registry",
    "defaults_for": "defaults",
    "load_saelens": "saelens_load",
    "save_saelens": "saelens_format",
}


__getattr__ = lazy_attributes(__name__, _WHERE)


__all__ = [
    "ARCHITECTURES",
    "ForwardOutput",
    "LossOutput",
    "LossSettings",
    "SAEConfig",
    "SparseAutoencoder",
    "build_sae",
    "defaults_for",
    "load_saelens",
    "save_saelens",
]
