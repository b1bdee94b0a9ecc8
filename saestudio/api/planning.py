"""What a training config will do before it runs: the widths of its data, the
hyperparameters after architecture defaults, its size and a time estimate.

The form in the web studio calls this (``POST /trainings/validate``) as the user types,
and ``POST /trainings`` runs the same check, so a config that cannot train (``k`` larger
than ``d_sae`` after ``expansion_factor``, a hook the dataset lacks) is a 422 naming the
field instead of a failed job a minute later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from saestudio.activations.manifest import open_activation_dataset
from saestudio.sae.config import ARCHITECTURES, SAEConfig
from saestudio.sae.defaults import defaults_for
from saestudio.training.config import TrainConfig, resolve

CPU_FLOPS = 5e10
"""Sustained fp32 FLOP/s of a 2-core laptop CPU on these products (bench/RESULTS.md)."""
GPU_FLOPS = 4e13
"""Sustained FLOP/s of one H100-class GPU with bf16 autocast (bench/RESULTS.md)."""

SAE_FIELDS = {"k", "d_sae", "d_in", "d_out", "activation", "skip", "expansion_factor"}


class ConfigProblem(ValueError):
    """A config that validates field by field but cannot train; ``loc`` names the field."""

    def __init__(self, loc: tuple[str, ...], msg: str):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


class Estimate(BaseModel):
    parameters: int = Field(description="Trainable parameters of all SAEs in the job.")
    memory_bytes: int = Field(
        description="Training memory: weights, gradients and Adam state, one batch's "
        "activations and the shuffle buffer."
    )
    flops_per_step: float
    steps: int
    tokens: int
    seconds_cpu: float = Field(description="At CPU_FLOPS (a 2-core laptop CPU).")
    seconds_gpu: float = Field(description="At GPU_FLOPS (one H100-class GPU).")


class TrainingPlan(BaseModel):
    d_in: int | None = Field(description="Input width, when the data is known here.")
    d_out: int | None
    saes: int = Field(description="SAEs the job trains (hooks × sweep combinations).")
    resolved: dict[str, Any] | None = Field(
        description="The first SAE's hyperparameters after architecture defaults."
    )
    estimate: Estimate | None


def _loc(msg: str) -> tuple[str, ...]:
    """``"k: must be ..."`` → ("config", "sae", "k"): the trainer's messages lead with the
    field they are about."""
    field = msg.split(":", 1)[0].strip()
    if field in SAE_FIELDS:
        return ("config", "sae", field)
    if field in TrainConfig.model_fields:
        return ("config", field)
    return ("config",)


def widths(cfg: TrainConfig) -> tuple[int | None, int | None]:
    """(d_in, d_out) read from the activations (manifest or .npy header), or None when
    the data is not on disk yet (a queued extraction, an on-the-fly model)."""
    if cfg.activations is None:
        return None, None
    path = Path(cfg.activations)
    if (path / "manifest.json").is_file():
        m = open_activation_dataset(path)
        d_in = d_out = None
        for hook, field in (
            (cfg.hook[0] if cfg.hook else None, "hook"),
            (cfg.target_hook, "target_hook"),
        ):
            if hook is None:
                continue
            if hook not in m.hooks:
                raise ConfigProblem(
                    ("config", field),
                    f"{field}: {hook!r} is not in this activation dataset (it has "
                    f"{', '.join(sorted(m.hooks))})",
                )
            if field == "hook":
                d_in = m.hooks[hook].d
            else:
                d_out = m.hooks[hook].d
        return d_in, d_out
    if path.suffix == ".npy" and path.is_file():
        # the header only: memory-mapped, never unpickled
        d_in = int(np.load(path, mmap_mode="r", allow_pickle=False).shape[-1])
        d_out = None
        if cfg.targets and Path(cfg.targets).suffix == ".npy" and Path(cfg.targets).is_file():
            d_out = int(np.load(cfg.targets, mmap_mode="r", allow_pickle=False).shape[-1])
        return d_in, d_out
    return None, None


def estimate(cfg: TrainConfig, sae: SAEConfig, saes: int) -> Estimate:
    assert sae.d_in is not None and sae.d_sae is not None and sae.d_out is not None
    d_in, d_sae, d_out, b = sae.d_in, sae.d_sae, sae.d_out, cfg.batch_size
    params = d_in * d_sae + d_sae + d_sae * d_out + d_out
    if sae.has_skip:
        params += d_in * d_out
    if sae.activation_fn == "jumprelu":
        params += d_sae
    if sae.uses_k:
        # dense encoder product and its weight gradient; the decoder touches k latents
        flops = 4 * b * d_in * d_sae + 6 * b * sae.k * d_out
    else:
        # encoder forward + weight grad, decoder forward + weight grad + input grad
        flops = 2 * b * d_sae * (2 * d_in + 3 * d_out)
    flops *= saes
    memory = 4 * (
        4 * params * saes  # weights, gradients, Adam m and v
        + 4 * b * d_sae * saes  # pre-activations, latents and their gradients
        + 3 * b * (d_in + d_out)
        + cfg.shuffle_buffer_rows * (d_in + d_out)
    )
    steps = cfg.total_steps
    return Estimate(
        parameters=params * saes,
        memory_bytes=memory,
        flops_per_step=float(flops),
        steps=steps,
        tokens=steps * b,
        seconds_cpu=flops * steps / CPU_FLOPS,
        seconds_gpu=flops * steps / GPU_FLOPS,
    )


def plan(cfg: TrainConfig) -> TrainingPlan:
    """Check ``cfg`` against its data and describe the job; :class:`ConfigProblem` when
    it cannot train."""
    d_in, d_out = widths(cfg)
    saes = max(len(cfg.hook), 1)
    for values in cfg.sweep.values():
        saes *= len(values)
    if d_in is None:
        return TrainingPlan(d_in=None, d_out=None, saes=saes, resolved=None, estimate=None)
    try:
        resolved = resolve(cfg, d_in, d_out)
    except ValidationError as e:  # the SAE config re-checked with the data's widths
        msg = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigProblem(_loc(msg), msg) from e
    except ValueError as e:
        raise ConfigProblem(_loc(str(e)), str(e)) from e
    return TrainingPlan(
        d_in=d_in,
        d_out=resolved.sae.d_out,
        saes=saes,
        resolved=resolved.to_json(),
        estimate=estimate(cfg, resolved.sae, saes),
    )


class ArchitectureInfo(BaseModel):
    name: str
    description: str
    activation: str | None = Field(
        description="Fixed activation; None = chosen (transcoder, skip)."
    )
    uses_k: bool
    defaults: dict[str, Any] = Field(
        description="Paper-grounded optimiser defaults (lr, λ, Adam, normalisation, warm-up "
        "and decay fractions)."
    )


DESCRIPTIONS = {
    "standard": "ReLU + L1 weighted by decoder norms (SAELens standard)",
    "standard_anthropic": "ReLU + L1, b_dec subtracted from the input (Anthropic, April 2024)",
    "jumprelu": "Learned per-latent thresholds and an L0 penalty (Gemma Scope)",
    "topk": "The k largest latents per token, AuxK against dead latents (Gao et al.)",
    "batchtopk": "The k × batch largest latents across a batch (Bussmann et al.)",
    "skip": "An SAE with a learned linear skip path W_skip",
    "transcoder": "Reads one hook, reconstructs another (Dunefsky et al.)",
}


def architectures() -> list[ArchitectureInfo]:
    from dataclasses import asdict

    out = []
    for name in ARCHITECTURES:
        cfg = SAEConfig(architecture=name)
        fixed = name not in ("transcoder", "skip")
        out.append(
            ArchitectureInfo(
                name=name,
                description=DESCRIPTIONS.get(name, name),
                activation=cfg.activation_fn if fixed else None,
                uses_k=cfg.uses_k,
                defaults=asdict(defaults_for(cfg)),
            )
        )
    return out
