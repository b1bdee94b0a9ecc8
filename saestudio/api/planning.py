"""What a training config will do before it runs: the widths of its data, the
hyperparameters after architecture defaults, its size and a time estimate.

The form in the web studio calls this (``POST /trainings/validate``) as the user types,
and ``POST /trainings`` runs the same check, so a config that cannot train (``k`` larger
than ``d_sae`` after ``expansion_factor``, a hook the dataset lacks) is a 422 naming the
field instead of a failed job a minute later.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from saestudio.activations.manifest import open_activation_dataset
from saestudio.sae.config import ARCHITECTURES, SAEConfig
from saestudio.sae.defaults import defaults_for
from saestudio.training.config import Resolved, TrainConfig, resolve

log = logging.getLogger(__name__)

CPU_FLOPS = 5e10
"""Sustained fp32 FLOP/s of a 2-core laptop CPU on these products (bench/RESULTS.md)."""
GPU_FLOPS = 4e13
"""Sustained FLOP/s of one H100-class GPU with bf16 autocast (bench/RESULTS.md)."""

SAE_FIELDS = set(SAEConfig.model_fields)


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
    estimate: Estimate | None = Field(
        description="Size, memory and time of all the job's SAEs together (one stream)."
    )


def _loc(msg: str) -> tuple[str, ...]:
    """``"k: must be ..."`` → ("config", "sae", "k"): the trainer's messages lead with the
    field they are about."""
    field = msg.split(":", 1)[0].strip()
    if field in SAE_FIELDS:
        return ("config", "sae", field)
    if field in TrainConfig.model_fields:
        return ("config", field)
    return ("config",)


def _name(loc: tuple[str, ...]) -> str:
    """("config", "hook", "1") → "hook[1]": how messages name a field."""
    return loc[1] + "".join(f"[{p}]" for p in loc[2:])


def _missing_hook(loc: tuple[str, ...], hook: str, have: list[str]) -> ConfigProblem:
    return ConfigProblem(
        loc,
        f"{_name(loc)}: {hook!r} is not in this activation dataset (it has "
        f"{', '.join(sorted(have))})",
    )


def _hook_fields(cfg: TrainConfig) -> list[tuple[tuple[str, ...], str]]:
    """(loc, hook) of every hook the job reads: each of ``hook``, then ``target_hook``."""
    fields: list[tuple[tuple[str, ...], str]] = []
    if len(cfg.hook) == 1:
        fields.append((("config", "hook"), cfg.hook[0]))
    else:
        fields += [(("config", "hook", str(i)), h) for i, h in enumerate(cfg.hook)]
    if cfg.target_hook:
        fields.append((("config", "target_hook"), cfg.target_hook))
    return fields


@lru_cache(maxsize=32)
def _model_widths(model: str, hooks: tuple[str, ...]) -> dict[str, int]:
    """Each hook's width in ``model``, from its module tree on the meta device (config
    only, no weights: milliseconds once transformers is imported). Cached: the web form
    asks again as the user types."""
    import torch

    from saestudio.activations.extract import _probe_dims
    from saestudio.activations.hookpoints import resolve_hook
    from saestudio.activations.models import model_on_meta

    module = model_on_meta(model)
    points = [resolve_hook(module, h) for h in hooks]
    return _probe_dims(module, points, torch.device("meta"))


def hook_widths(cfg: TrainConfig) -> dict[str, int] | None:
    """Every hook's width (``hook`` and ``target_hook``), read from the activation
    dataset's manifest or the model's module tree; ``{"": d}`` for a plain .npy file
    (its hooks are metadata); None when the data is not on disk yet (a queued
    extraction). :class:`ConfigProblem` naming the hook that the data lacks."""
    if cfg.activations is None:
        assert cfg.model is not None
        from saestudio.activations.hookpoints import HookError

        fields = _hook_fields(cfg)
        for loc, hook in fields:  # one at a time: the error names the right field
            try:
                _model_widths(cfg.model, (hook,))
            except HookError as e:
                msg = str(e).removeprefix("hooks: ")
                raise ConfigProblem(loc, f"{_name(loc)}: {msg}") from e
            except (OSError, ValueError) as e:  # no config for this model, or not a model
                raise ConfigProblem(("config", "model"), f"model: {e}") from e
            except Exception:  # a module tree that does not run on meta: the worker checks
                log.warning("cannot check %s's hooks on the meta device", cfg.model, exc_info=True)
                return None
        return _model_widths(cfg.model, tuple(h for _, h in fields))
    path = Path(cfg.activations)
    if (path / "manifest.json").is_file():
        m = open_activation_dataset(path)
        for loc, hook in _hook_fields(cfg):
            if hook not in m.hooks:
                raise _missing_hook(loc, hook, list(m.hooks))
        return {name: info.d for name, info in m.hooks.items()}
    if path.suffix == ".npy" and path.is_file():
        # the header only: memory-mapped, never unpickled
        out = {"": int(np.load(path, mmap_mode="r", allow_pickle=False).shape[-1])}
        if cfg.targets and Path(cfg.targets).suffix == ".npy" and Path(cfg.targets).is_file():
            out["targets"] = int(np.load(cfg.targets, mmap_mode="r", allow_pickle=False).shape[-1])
        return out
    return None


def widths(cfg: TrainConfig) -> tuple[int | None, int | None]:
    """(d_in, d_out) of the first hook (see :func:`hook_widths`), or None when unknown."""
    found = hook_widths(cfg)
    if found is None:
        return None, None
    return _job_widths(cfg, cfg.hook[0] if cfg.hook else None, found)


def _job_widths(
    cfg: TrainConfig, hook: str | None, found: dict[str, int]
) -> tuple[int, int | None]:
    if "" in found:  # a plain file: one width, the targets' own
        return found[""], found.get("targets")
    assert hook is not None  # an activation dataset or on-the-fly job names its hooks
    return found[hook], found[cfg.target_hook] if cfg.target_hook else None


def estimate(cfg: TrainConfig, saes: list[SAEConfig], stream_width: int) -> Estimate:
    """Size, memory and time of training every SAE in ``saes`` from one stream of rows
    ``stream_width`` wide (all hooks, and the targets, side by side)."""
    b = cfg.batch_size
    params = flops = memory = 0
    for sae in saes:
        assert sae.d_in is not None and sae.d_sae is not None and sae.d_out is not None
        d_in, d_sae, d_out = sae.d_in, sae.d_sae, sae.d_out
        p = d_in * d_sae + d_sae + d_sae * d_out + d_out
        if sae.has_skip:
            p += d_in * d_out
        if sae.activation_fn == "jumprelu":
            p += d_sae
        if sae.uses_k:
            # dense encoder product and its weight gradient; the decoder touches k latents
            flops += 4 * b * d_in * d_sae + 6 * b * sae.k * d_out
        else:
            # encoder forward + weight grad, decoder forward + weight grad + input grad
            flops += 2 * b * d_sae * (2 * d_in + 3 * d_out)
        params += p
        # weights, gradients, Adam m and v; pre-activations, latents and their gradients
        memory += 4 * (4 * p + 4 * b * d_sae)
    memory += 4 * (3 * b * stream_width + cfg.shuffle_buffer_rows * stream_width)
    steps = cfg.total_steps
    return Estimate(
        parameters=params,
        memory_bytes=memory,
        flops_per_step=float(flops),
        steps=steps,
        tokens=steps * b,
        seconds_cpu=flops * steps / CPU_FLOPS,
        seconds_gpu=flops * steps / GPU_FLOPS,
    )


def _job_problem(cfg: TrainConfig, combo: dict[str, tuple[int, float]], msg: str) -> ConfigProblem:
    """A derived job's problem, said about the sweep value that caused it when the
    message is about a swept field (``sweep.k[1]: must be at most d_sae (64), got 4096``),
    else about the field itself."""
    field, sep, rest = msg.partition(": ")
    if sep and field in combo:
        i = combo[field][0]
        return ConfigProblem(("config", "sweep", field, str(i)), f"sweep.{field}[{i}]: {rest}")
    if combo and field == "k" and "d_sae" in combo:  # k checked against a swept d_sae
        i = combo["d_sae"][0]
        return ConfigProblem(("config", "sweep", "d_sae", str(i)), f"sweep.d_sae[{i}]: {msg}")
    return ConfigProblem(_loc(msg), msg)


def plan(cfg: TrainConfig) -> TrainingPlan:
    """Check every SAE the job trains against its data (each hook against the dataset's
    hooks or the model's module tree, each sweep value after defaults and the data's
    widths) and describe the job; :class:`ConfigProblem` naming the field when any of
    them cannot train."""
    try:
        found = hook_widths(cfg)
    except OSError as e:  # a path the filesystem refuses to look at (a name too long)
        raise ConfigProblem(("config", "activations"), f"activations: {e}") from None
    jobs = cfg.job_plan()
    if found is None:
        return TrainingPlan(d_in=None, d_out=None, saes=len(jobs), resolved=None, estimate=None)
    resolved: list[Resolved] = []
    for _, hook, combo in jobs:
        values = {k: v for k, (_, v) in combo.items()}
        job = cfg.single(hook, values, cfg.out)  # validated at construction (sweep checks)
        d_in, d_out = _job_widths(cfg, hook, found)
        try:
            resolved.append(resolve(job, d_in, d_out))
        except ValidationError as e:  # the SAE config re-checked with the data's widths
            msg = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
            raise _job_problem(cfg, combo, msg) from e
        except ValueError as e:
            raise _job_problem(cfg, combo, str(e)) from e
    first = resolved[0]
    if "" in found:
        stream = found[""] + found.get("targets", 0)
    else:
        stream = sum(found[h] for h in {*cfg.hook, *([cfg.target_hook] if cfg.target_hook else [])})
    try:
        sizes = estimate(cfg, [r.sae for r in resolved], stream)
    except OverflowError:  # widths beyond any machine: say so instead of a 500
        raise ConfigProblem(("config", "sae"), "sae: too large to train on any machine") from None
    return TrainingPlan(
        d_in=first.sae.d_in,
        d_out=first.sae.d_out,
        saes=len(jobs),
        resolved=first.to_json(),
        estimate=sizes,
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
    sae_defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="The architecture's own SAEConfig fields and what an empty one becomes "
        "(e.g. matryoshka_widths: the geometric ladder).",
    )


DESCRIPTIONS = {
    "standard": "ReLU + L1 weighted by decoder norms (SAELens standard)",
    "standard_anthropic": "ReLU + L1, b_dec subtracted from the input (Anthropic, April 2024)",
    "jumprelu": "Learned per-latent thresholds and an L0 penalty (Gemma Scope)",
    "topk": "The k largest latents per token, AuxK against dead latents (Gao et al.)",
    "batchtopk": "The k × batch largest latents across a batch (Bussmann et al.)",
    "matryoshka_batchtopk": "BatchTopK trained to reconstruct from every nested prefix of "
    "its latents (Bussmann et al. 2025)",
    "skip": "An SAE with a learned linear skip path W_skip",
    "transcoder": "Reads one hook, reconstructs another (Dunefsky et al.)",
}


def _sae_defaults(name: str) -> dict[str, Any]:
    fields = SAEConfig.model_fields
    out: dict[str, Any] = {}
    if name in ("topk", "batchtopk", "matryoshka_batchtopk"):
        out["k"] = fields["k"].default
    if name == "jumprelu":
        out["jumprelu_bandwidth"] = fields["jumprelu_bandwidth"].default
        out["jumprelu_init_threshold"] = fields["jumprelu_init_threshold"].default
    if name in ("matryoshka_batchtopk", "transcoder"):  # transcoders may take it as activation
        out["matryoshka_widths"] = "d_sae/64, d_sae/16, d_sae/4, d_sae"
        out["matryoshka_aux_per_level"] = fields["matryoshka_aux_per_level"].default
    return out


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
                sae_defaults=_sae_defaults(name),
            )
        )
    return out
