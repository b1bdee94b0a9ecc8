"""Each architecture's paper-grounded optimiser and sparsity defaults (SPEC §2.A table).

Torch-free on purpose: :mod:`saestudio.training.config` resolves a config with these
without importing a single architecture (or torch), so validating a config (the API's
``/validate``, the CLI's flag parsing) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from saestudio.sae.config import SAEConfig


@dataclass(frozen=True)
class ArchDefaults:
    """Paper-grounded defaults of one architecture (SPEC §2.A table)."""

    lr: float
    sparsity_coefficient: float
    sparsity_warmup_fraction: float = 0.0
    lr_decay_fraction: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    normalize_activations: str = "none"


# SAELens: lr 4e-4, λ warm-up over the first 5 % of steps, LR decay over the last 20 %,
# λ = 1 on the raw activations (SAELens's l1_coefficient and normalize_activations
# defaults). Issue 13 measured Anthropic's April-2024 λ = 5 on inputs scaled to
# E‖x‖ = √d_in against it: scaling up the inputs makes Adam's fixed-size b_enc steps
# relatively small, so short runs stay dense (or, at λ = 5, die: on 16-d rows with 3
# active features held-out FVU 0.996 at L0 8 after 300 steps). On the SynthSAEBench-style
# benchmark (bench/RESULTS.md, "Ground truth": "small", seed 0, 400 steps), scaled inputs
# give λ 1 / 3 / 5 → F1 0.54 / 0.80 / 0.85 at L0 90 / 51 / 50; raw inputs with λ 1 give
# F1 0.89 at L0 41 (MCC 0.34–0.39 for all four: chance level at this budget).
STANDARD = ArchDefaults(
    lr=4e-4,
    sparsity_coefficient=1.0,
    sparsity_warmup_fraction=0.05,
    lr_decay_fraction=0.2,
    normalize_activations="none",
)

# Gemma Scope §3: lr 7e-5, Adam β1 = 0, ε_bandwidth 0.001, θ0 = 0.001, count-based L0
# coefficient ~1e-3 warmed up over ~10k steps, inputs scaled to unit mean squared norm.
JUMPRELU = ArchDefaults(
    lr=7e-5,
    sparsity_coefficient=1e-3,
    sparsity_warmup_fraction=0.1,
    adam_beta1=0.0,
    adam_beta2=0.999,
    normalize_activations="unit_mean_squared_norm",
)

# Gao et al. §2.3/§A: Adam eps 6.25e-10, lr ∝ 1/√(d_sae/2^14) (the trainer applies that
# scaling when lr is not given), AuxK α = 1/32, k_aux = d_in/2. The base lr is 8e-4 at 16k
# latents, 4× the paper's 2e-4: measured at batch 4096 on MiniLM residuals (d_sae 3072),
# held-out FVU 0.077 vs 0.109 after 2M tokens and 0.061 vs 0.069 after 10M
# (bench/RESULTS.md, "TopK learning rate"). BatchTopK (Bussmann et al.) takes the same.
TOPK = ArchDefaults(lr=8e-4, sparsity_coefficient=0.0, adam_eps=6.25e-10)

# Dunefsky et al.: λ ≈ 1.4e-4, lr 4e-4, ×32 expansion, batch 4096.
TRANSCODER = ArchDefaults(lr=4e-4, sparsity_coefficient=1.4e-4, sparsity_warmup_fraction=0.05)

DEFAULTS: dict[str, ArchDefaults] = {
    "standard": STANDARD,
    "standard_anthropic": STANDARD,
    "jumprelu": JUMPRELU,
    "topk": TOPK,
    "batchtopk": TOPK,
    "matryoshka_batchtopk": TOPK,  # BatchTopK's (Bussmann et al. 2025 train it alike)
    "skip": STANDARD,
    "transcoder": TRANSCODER,
}
"""Architecture name → its defaults; every name of ``SAEConfig.architecture``."""


def defaults_for(cfg: SAEConfig) -> ArchDefaults:
    """Defaults of the architecture; skip SAEs and transcoders take the activation's
    optimiser settings (e.g. JumpReLU's β1 = 0) and their own λ and lr."""
    base = DEFAULTS[cfg.architecture]
    if cfg.architecture in ("skip", "transcoder") and cfg.activation_fn != "relu":
        act = DEFAULTS[cfg.activation_fn]
        return replace(act, lr=base.lr if cfg.activation_fn == "jumprelu" else act.lr)
    return base


__all__ = ["DEFAULTS", "ArchDefaults", "defaults_for"]
