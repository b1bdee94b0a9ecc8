"""The one training config: library, CLI, API and database all carry this object.

Fields left ``None`` take the architecture's paper-grounded default (SPEC §2.A); the
values a run actually used are resolved once by :func:`resolve` and saved with every
checkpoint, so the config itself never changes after construction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from saestudio.sae.config import SAEConfig
from saestudio.sae.defaults import defaults_for

SWEEPABLE = ("k", "d_sae", "expansion_factor", "sparsity_coefficient", "lr", "l0_target")
SAE_SWEEPABLE = ("k", "d_sae", "expansion_factor")

Normalization = Literal[
    "none", "expected_average_only_in", "unit_mean_squared_norm", "constant_norm_rescale"
]


class TrainConfig(BaseModel):
    """Everything one training run needs. Frozen; every field validated on construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # ---- data -------------------------------------------------------------------------
    activations: str | None = Field(
        None,
        description="Training inputs: an activation dataset folder from `saestudio extract` "
        "(pick hooks with `hook`), or a .npy/.safetensors file shaped [N, d], or a folder of "
        "such shards (read memory-mapped, never loaded whole). Leave empty to train on the "
        "fly from `model` + `dataset`.",
    )
    targets: str | None = Field(
        None,
        description="Transcoders on plain files: the paired target activations "
        "(same rows as `activations`).",
    )
    model: str | None = Field(
        None,
        description="Model name or local folder: the on-the-fly source, and metadata for the "
        "export otherwise.",
    )
    dataset: str | None = Field(
        None,
        description="On-the-fly text: a Hugging Face dataset name, a local .txt/.jsonl/"
        ".parquet/.csv file, or demo:pydoc.",
    )
    text_column: str = Field("text", description="On-the-fly: the dataset's text column.")
    context_length: int = Field(
        128, ge=2, le=1_000_000, description="On-the-fly: tokens per context."
    )
    model_batch_size: int = Field(
        16, ge=1, description="On-the-fly: contexts per model forward pass."
    )
    model_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="On-the-fly: dtype to run the model in."
    )
    exclude_special_tokens: bool = Field(
        False, description="On-the-fly: drop BOS/EOS/pad positions from the training rows."
    )
    downstream_contexts: int = Field(
        16,
        ge=0,
        description="At the end, contexts of text on which to measure next-token loss with "
        "each SAE spliced in (CE loss recovered, KL) when the model is a causal LM; 0 = off.",
    )
    hook: list[str] = Field(
        default_factory=list,
        description="Hook(s) to train on (activation datasets and on-the-fly), e.g. "
        "resid_post.3; several (comma-separated) train one SAE each from one stream. "
        "Metadata for plain files.",
    )
    target_hook: str | None = Field(
        None, description="Transcoders: the hook to reconstruct, e.g. mlp_out.3."
    )
    sweep: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Train one SAE per value from one stream, e.g. k=16,32 or "
        "sparsity_coefficient=1e-3,1e-2 (keys: " + ", ".join(SWEEPABLE) + ").",
    )
    eval_tokens: int = Field(
        4096,
        ge=1,
        description="Rows held out at the end of the data for evaluation and best-checkpoint "
        "choice (capped at 10% of the data).",
    )
    shuffle_buffer_rows: int = Field(
        65536, ge=1, description="Rows shuffled together in memory; bounds the reader's RAM."
    )
    shuffle_block_rows: int = Field(
        1024, ge=1, description="Contiguous rows read per block; blocks are shuffled first."
    )

    # ---- architecture -------------------------------------------------------------------
    sae: SAEConfig = Field(default_factory=SAEConfig, description="The SAE's architecture.")

    # ---- optimisation ---------------------------------------------------------------------
    steps: int | None = Field(
        None, ge=1, description="Optimiser steps; or give training_tokens. Default 2000."
    )
    training_tokens: int | None = Field(
        None, ge=1, description="Total training rows; steps = ceil(training_tokens / batch_size)."
    )
    batch_size: int = Field(4096, ge=1, description="Rows per optimiser step.")
    grad_accum_steps: int = Field(
        1, ge=1, description="Split each batch into this many micro-batches (saves memory)."
    )
    optimizer: Literal["adam", "adamw"] = Field("adam", description="Adam or AdamW.")
    lr: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Peak learning rate; default per architecture (topk: 8e-4/√(d_sae/2^14)).",
    )
    adam_beta1: float | None = Field(None, ge=0, lt=1, description="Adam β1 (jumprelu: 0).")
    adam_beta2: float | None = Field(None, ge=0, lt=1, description="Adam β2.")
    adam_eps: float | None = Field(None, gt=0, description="Adam ε (topk: 6.25e-10).")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (AdamW: decoupled).")
    grad_clip_norm: float | None = Field(
        None, gt=0, description="Clip the global gradient norm to this value; None = no clip."
    )
    lr_schedule: Literal["constant", "cosine", "linear", "onecycle"] = Field(
        "constant",
        description="After warm-up: constant (optionally decaying over the last lr_decay_steps), "
        "cosine or linear decay to min_lr_ratio·lr, or one-cycle (warm-up 30% then cosine).",
    )
    lr_warmup_steps: int = Field(0, ge=0, description="Linear warm-up from 0 to lr.")
    lr_decay_steps: int | None = Field(
        None,
        ge=0,
        description="constant schedule: linear decay over the last N steps (standard: 20%).",
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final lr as a fraction of lr.")
    sparsity_coefficient: float | None = Field(
        None,
        ge=0,
        description="λ: L1 coefficient (standard, transcoder), L0 coefficient (jumprelu); "
        "unused by topk/batchtopk/matryoshka_batchtopk. Default per architecture.",
    )
    sparsity_warmup_steps: int | None = Field(
        None, ge=0, description="Linear warm-up of λ from 0 (standard: first 5% of steps)."
    )
    l0_target: float | None = Field(
        None,
        gt=0,
        description="JumpReLU L0 target mode: penalise (L0/target − 1)² instead of L0.",
    )
    aux_k: int | None = Field(
        None, ge=0, description="AuxK latents for dead-latent revival (default d_in/2; 0 = off)."
    )
    aux_k_coefficient: float = Field(1 / 32, ge=0, description="AuxK loss weight α.")
    dead_after_tokens: int | None = Field(
        None,
        ge=1,
        description="A latent is dead after not firing for this many rows "
        "(default 10M, capped at a tenth of the run).",
    )

    # ---- numerics ---------------------------------------------------------------------------
    normalize_activations: Normalization | None = Field(
        None,
        description="Input scaling: expected_average_only_in (E‖x‖ = √d_in), "
        "unit_mean_squared_norm (E‖x‖² = 1), both folded into the weights on export; "
        "constant_norm_rescale (each row to norm √d_in, applied at inference too); none.",
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N.")
    num_devices: int = Field(
        1,
        ge=1,
        le=1024,
        description="Data-parallel processes (torchrun, DDP) on one machine: one per GPU "
        "(NCCL) when the device is CUDA, else CPU processes with gloo (at most one per core). "
        "`saestudio train` and the studio's workers launch torchrun themselves when it is "
        "above 1; under an outside torchrun the world size is torchrun's.",
    )
    autocast: Literal["auto", "bf16", "fp16", "none"] = Field(
        "auto", description="Mixed precision on CUDA (auto = bf16); always fp32 on CPU."
    )
    compile: bool | None = Field(
        None, description="torch.compile the loss step (None = on for CUDA)."
    )
    seed: int = Field(0, ge=0, description="Seed for init and data order; runs are repeatable.")

    # ---- output ----------------------------------------------------------------------------
    out: str = Field("runs/sae", description="Output folder (SAE, checkpoints, metrics.jsonl).")
    log_every: int = Field(10, ge=1, description="Log metrics every N steps.")
    eval_every: int = Field(100, ge=1, description="Evaluate on the held-out rows every N steps.")
    density_every: int = Field(
        500, ge=1, description="Emit the feature-density histogram every N steps."
    )
    checkpoint_every: int = Field(
        500, ge=0, description="Checkpoint every N steps (0 = only on pause/stop/end)."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Keep the best checkpoint plus the last N.")

    @field_validator("hook", mode="before")
    @classmethod
    def _split_hooks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("sweep", mode="before")
    @classmethod
    def _parse_sweep(cls, value: Any) -> Any:
        """Accept ``"k=16,32;lr=1e-3,3e-3"`` from the command line."""
        if not isinstance(value, str):
            return value
        out: dict[str, list[str]] = {}
        for part in filter(None, (p.strip() for p in value.split(";"))):
            key, eq, vals = part.partition("=")
            if not eq:
                raise ValueError(f"expected key=v1,v2 but got {part!r}")
            out[key.strip()] = [v.strip() for v in vals.split(",") if v.strip()]
        return out

    @field_validator("sweep")
    @classmethod
    def _check_sweep(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for key, vals in value.items():
            if key not in SWEEPABLE:
                raise ValueError(f"cannot sweep {key!r}; sweepable: {', '.join(SWEEPABLE)}")
            if not vals:
                raise ValueError(f"{key}: give at least one value")
            for i, v in enumerate(vals):
                if not math.isfinite(v):
                    raise ValueError(f"sweep.{key}[{i}]: must be a finite number, got {v}")
                if key in SAE_SWEEPABLE and v != int(v):
                    raise ValueError(f"sweep.{key}[{i}]: must be a whole number, got {v:g}")
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.activations is None and (self.model is None or self.dataset is None):
            raise ValueError(
                "activations: give an activation file/folder, or model and dataset to train "
                "on the fly"
            )
        if self.activations is None and not self.hook:
            raise ValueError(
                "hook: on-the-fly training needs the hook(s) to read, e.g. resid_post.3"
            )
        if self.target_hook and not self.sae.is_transcoder:
            raise ValueError("target_hook: only transcoders read a target hook")
        if self.steps is not None and self.training_tokens is not None:
            raise ValueError("steps: give steps or training_tokens, not both")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"grad_accum_steps: must divide batch_size ({self.batch_size}), "
                f"got {self.grad_accum_steps}"
            )
        if self.sae.is_transcoder and not (self.targets or self.target_hook):
            raise ValueError(
                "targets: a transcoder needs paired targets (targets file or target_hook)"
            )
        if self.targets and not self.sae.is_transcoder:
            raise ValueError("targets: only transcoders take target activations")
        if self.l0_target is not None and self.sae.activation_fn != "jumprelu":
            raise ValueError("l0_target: only JumpReLU SAEs have an L0 target mode")
        if self.shuffle_block_rows > self.shuffle_buffer_rows:
            raise ValueError("shuffle_block_rows: must not exceed shuffle_buffer_rows")
        self._check_sweep_values()
        return self

    def _check_sweep_values(self) -> None:
        """Every sweep value, alone and in each combination, must make a config the
        validators accept (a worker would refuse it at start otherwise); the message
        names the value, e.g. ``sweep.k[1]: must be at most d_sae (64), got 4096``."""
        if not self.sweep:
            return
        checks: list[tuple[str, dict[str, float]]] = [
            (f"sweep.{key}[{i}]", {key: v}) for key, vals in self.sweep.items()
            for i, v in enumerate(vals)
        ]  # fmt: skip
        if len(self.sweep) > 1:
            for combo in self.sweep_combos():
                name = ", ".join(f"sweep.{k}[{i}]" for k, (i, _) in combo.items())
                checks.append((name, {k: v for k, (_, v) in combo.items()}))
        hook = self.hook[0] if self.hook else None
        for name, values in checks:
            try:
                self.single(hook, values, self.out)
            except ValidationError as e:
                raise ValueError(f"{name}: {sweep_error(e, values)}") from None

    def sweep_combos(self) -> list[dict[str, tuple[int, float]]]:
        """Every sweep combination, key → (index in ``sweep[key]``, value), in a stable
        order (the first key varies slowest)."""
        combos: list[dict[str, tuple[int, float]]] = [{}]
        for key, vals in self.sweep.items():
            combos = [{**c, key: (i, v)} for c in combos for i, v in enumerate(vals)]
        return combos

    def single(self, hook: str | None, combo: dict[str, float], out: str) -> TrainConfig:
        """The one-SAE config for ``hook`` with the sweep values ``combo``, built through
        the validators (ValidationError when a value cannot train alone)."""
        data = self.model_dump()
        data["sae"].update({k: int(v) for k, v in combo.items() if k in SAE_SWEEPABLE})
        data.update({k: v for k, v in combo.items() if k not in SAE_SWEEPABLE})
        data.update(hook=[hook] if hook else [], sweep={}, out=out)
        return TrainConfig.model_validate(data)

    def job_plan(self) -> list[tuple[str, str | None, dict[str, tuple[int, float]]]]:
        """(label, hook, combo) of every SAE the job trains: one per hook × sweep
        combination, in the order :meth:`sae_jobs` returns them. The label is empty for
        the one SAE of a job without sweep or second hook (it trains in ``out`` itself)."""
        hooks: list[str | None] = list(self.hook) or [None]
        out = []
        for hook in hooks:
            for combo in self.sweep_combos():
                parts = ([hook] if len(hooks) > 1 and hook else []) + [
                    f"{k}={v:g}" for k, (_, v) in combo.items()
                ]
                out.append(("_".join(parts), hook, combo))
        return out

    def sae_jobs(self) -> list[tuple[str, TrainConfig]]:
        """One (label, single-SAE config) per hook × sweep value, in a stable order.

        Each derived config is exactly what training that SAE alone would take (built
        through the validators, so every job a worker runs was checked), and a many-SAE
        job and separate runs with the same seed give the same SAEs.
        """
        jobs = []
        for label, hook, combo in self.job_plan():
            out = str(Path(self.out) / label) if label else self.out
            values = {k: v for k, (_, v) in combo.items()}
            jobs.append((label or "sae", self.single(hook, values, out)))
        return jobs

    @property
    def total_steps(self) -> int:
        if self.training_tokens is not None:
            return math.ceil(self.training_tokens / self.batch_size)
        return self.steps or 2000


def sweep_error(e: ValidationError, values: dict[str, float]) -> str:
    """The first problem of a derived config, said about the swept value: the trainer's
    own messages lead with the field (``k: must be ...``), which the caller's name
    replaces; pydantic's get the value appended."""
    err = e.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    field, sep, rest = msg.partition(": ")
    if sep and field in values:
        return rest
    loc = ".".join(str(p) for p in err["loc"])
    key = str(err["loc"][-1]) if err["loc"] else ""
    got = f", got {values[key]:g}" if key in values else ""
    return f"{msg}{got}" if key in values else f"{loc}: {msg}" if loc else msg


@dataclass(frozen=True)
class Resolved:
    """The hyperparameters a run actually uses, after architecture defaults."""

    sae: SAEConfig
    steps: int
    lr: float
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    sparsity_coefficient: float
    sparsity_warmup_steps: int
    lr_decay_steps: int
    normalize_activations: str
    aux_k: int
    dead_after_tokens: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sae"] = self.sae.model_dump()
        return data


def resolve(cfg: TrainConfig, d_in: int, d_out: int | None) -> Resolved:
    """Fill every ``None`` with the architecture's default, given the data's widths."""
    sae = cfg.sae.resolved(d_in, d_out)
    assert sae.d_sae is not None and sae.d_out is not None
    if sae.uses_k and sae.k > sae.d_sae:
        raise ValueError(f"k: must be at most d_sae ({sae.d_sae}), got {sae.k}")
    d = defaults_for(sae)
    steps = cfg.total_steps
    lr = cfg.lr
    if lr is None:
        lr = d.lr
        if sae.uses_k:
            lr = d.lr / math.sqrt(sae.d_sae / 2**14)  # Gao et al. §A: lr ∝ 1/√(d_sae/2^14)
    warm = cfg.sparsity_warmup_steps
    if warm is None:
        warm = round(d.sparsity_warmup_fraction * steps)
    decay = cfg.lr_decay_steps
    if decay is None:
        decay = round(d.lr_decay_fraction * steps) if cfg.lr_schedule == "constant" else 0
    total_rows = steps * cfg.batch_size
    dead_after = cfg.dead_after_tokens or max(cfg.batch_size, min(10_000_000, total_rows // 10))
    return Resolved(
        sae=sae,
        steps=steps,
        lr=min(lr, 1.0),
        adam_beta1=d.adam_beta1 if cfg.adam_beta1 is None else cfg.adam_beta1,
        adam_beta2=d.adam_beta2 if cfg.adam_beta2 is None else cfg.adam_beta2,
        adam_eps=d.adam_eps if cfg.adam_eps is None else cfg.adam_eps,
        sparsity_coefficient=(
            d.sparsity_coefficient if cfg.sparsity_coefficient is None else cfg.sparsity_coefficient
        ),
        sparsity_warmup_steps=warm,
        lr_decay_steps=min(decay, steps),
        normalize_activations=cfg.normalize_activations or d.normalize_activations,
        aux_k=sae.d_out // 2 if cfg.aux_k is None else cfg.aux_k,
        dead_after_tokens=dead_after,
    )
