"""SAE architectures: one interface (``encode``/``decode``/``forward``/``loss``), a registry,
and SAELens-format saving and loading."""

from saestudio.sae.base import ForwardOutput, LossOutput, LossSettings, SparseAutoencoder
from saestudio.sae.config import ARCHITECTURES, SAEConfig
from saestudio.sae.registry import build_sae, defaults_for
from saestudio.sae.saelens_format import save_saelens
from saestudio.sae.saelens_load import load_saelens

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
