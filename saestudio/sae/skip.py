"""A6 skip SAE: x̂ = W_dec·z + b_dec + W_skip·x with a learned W_skip, zero at init.

Never the seed's fixed mix of the input into the output (erratum 3), which makes every
reconstruction metric meaningless. The skip path itself lives in the base class
(``SparseAutoencoder.W_skip``); this file picks the activation.
"""

from __future__ import annotations

from saestudio.sae.base import ArchDefaults, SparseAutoencoder
from saestudio.sae.config import SAEConfig
from saestudio.sae.standard import DEFAULTS as STANDARD_DEFAULTS

DEFAULTS: ArchDefaults = STANDARD_DEFAULTS


def build(cfg: SAEConfig) -> SparseAutoencoder:
    from saestudio.sae.registry import class_for_activation

    return class_for_activation(cfg.activation_fn)(cfg)
