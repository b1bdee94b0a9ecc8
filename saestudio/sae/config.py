"""The shape-and-function config of one SAE: everything needed to rebuild the module.

Training hyperparameters live in :mod:`saestudio.training.config`; this object is what
is saved next to the weights in checkpoints and exports.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Architecture = Literal[
    "standard",
    "standard_anthropic",
    "jumprelu",
    "topk",
    "batchtopk",
    "matryoshka_batchtopk",
    "skip",
    "transcoder",
]
Activation = Literal["relu", "topk", "batchtopk", "matryoshka_batchtopk", "jumprelu"]

ARCHITECTURES: tuple[str, ...] = Architecture.__args__  # type: ignore[attr-defined]

MATRYOSHKA_RATIO = 4
MATRYOSHKA_LEVELS = 4


def default_matryoshka_widths(d_sae: int) -> tuple[int, ...]:
    """The default ladder: a geometric one with ratio 4 ending at d_sae, four levels
    (d_sae/64, d_sae/16, d_sae/4, d_sae; e.g. 256, 1024, 4096, 16384), levels narrower
    than one latent dropped. Bussmann et al. use nested dictionaries growing by ×4–×8
    (128 … 65k); four levels keep the step cost close to BatchTopK's."""
    ladder = [d_sae // MATRYOSHKA_RATIO**i for i in range(MATRYOSHKA_LEVELS - 1, -1, -1)]
    return tuple(sorted({w for w in ladder if w >= 1}))


class SAEConfig(BaseModel):
    """Architecture of one sparse autoencoder or transcoder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: Architecture = Field(
        "topk",
        description="standard (ReLU + decoder-norm-weighted L1, SAELens), standard_anthropic "
        "(b_dec subtracted from the input, unit-norm decoder rows), jumprelu (Gemma Scope), "
        "topk (OpenAI), batchtopk, matryoshka_batchtopk (BatchTopK + nested prefix losses), skip (an SAE with a learned linear skip W_skip), "
        "transcoder (reads one hook, reconstructs another).",
    )
    d_in: int | None = Field(
        None, ge=1, description="Input width; taken from the data when not given."
    )
    d_sae: int | None = Field(
        None, ge=1, description="Number of latents; defaults to expansion_factor × d_in."
    )
    expansion_factor: int = Field(
        8, ge=1, le=1024, description="d_sae = expansion_factor × d_in when d_sae is not given."
    )
    d_out: int | None = Field(
        None,
        ge=1,
        description="Output width (transcoders); taken from the target data when not given. "
        "Equals d_in for SAEs.",
    )
    activation: Activation | None = Field(
        None,
        description="Activation of a transcoder or skip SAE: relu (L1), topk, batchtopk or "
        "jumprelu. Fixed by the architecture for the others.",
    )
    skip: bool = Field(
        False, description="Transcoders: add a learned linear skip path W_skip (zero init)."
    )
    k: int = Field(
        32, ge=1, description="Active latents per row (topk, batchtopk, matryoshka_batchtopk)."
    )
    matryoshka_widths: tuple[int, ...] | None = Field(
        None,
        description="matryoshka_batchtopk: widths of the nested latent prefixes whose "
        "reconstructions are each trained, strictly increasing, the last = d_sae; default a "
        "geometric ladder d_sae/64, d_sae/16, d_sae/4, d_sae.",
    )
    matryoshka_aux_per_level: bool = Field(
        False,
        description="matryoshka_batchtopk: AuxK per level (each level's dead latents "
        "reconstruct the residual of its own prefix) instead of one AuxK over the whole SAE.",
    )
    jumprelu_bandwidth: float = Field(
        0.001, gt=0, le=1, description="JumpReLU straight-through kernel bandwidth ε."
    )
    jumprelu_init_threshold: float = Field(
        0.001, gt=0, description="Initial JumpReLU threshold θ for every latent."
    )
    decoder_init_norm: float | None = Field(
        None,
        gt=0,
        description="Norm of each decoder row at init; None = the architecture's default "
        "(0.1 for standard, 1 elsewhere).",
    )

    @field_validator("matryoshka_widths", mode="before")
    @classmethod
    def _split_widths(cls, value: object) -> object:
        """Accept ``"64,256,1024"`` from the command line."""
        if isinstance(value, str):
            return tuple(int(w) for w in value.replace(" ", "").split(",") if w)
        return value

    @model_validator(mode="after")
    def _check(self) -> SAEConfig:
        if self.activation is not None and self.architecture not in ("transcoder", "skip"):
            raise ValueError(
                f"activation: only transcoder and skip take an activation; "
                f"{self.architecture} fixes its own"
            )
        if self.skip and self.architecture != "transcoder":
            raise ValueError("skip: only for transcoders (use architecture 'skip' for SAEs)")
        self._check_matryoshka()
        if self.d_sae is not None and self.uses_k and self.k > self.d_sae:
            raise ValueError(f"k: must be at most d_sae ({self.d_sae}), got {self.k}")
        if (
            self.d_out is not None
            and self.d_in is not None
            and not self.is_transcoder
            and self.d_out != self.d_in
        ):
            raise ValueError(f"d_out: must equal d_in ({self.d_in}) for an SAE")
        return self

    def _check_matryoshka(self) -> None:
        widths = self.matryoshka_widths
        if widths is None:
            return
        if self.activation_fn != "matryoshka_batchtopk":
            raise ValueError(
                "matryoshka_widths: only for matryoshka_batchtopk (architecture, or a "
                "transcoder's activation)"
            )
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"matryoshka_widths: give positive widths, got {list(widths)}")
        if any(b <= a for a, b in zip(widths, widths[1:], strict=False)):
            raise ValueError(f"matryoshka_widths: must be strictly increasing, got {list(widths)}")
        if self.d_sae is not None and widths[-1] != self.d_sae:
            raise ValueError(
                f"matryoshka_widths: the last width must equal d_sae ({self.d_sae}), "
                f"got {widths[-1]}"
            )

    @property
    def activation_fn(self) -> Activation:
        """The activation function this config resolves to."""
        fixed: dict[str, Activation] = {
            "standard": "relu",
            "standard_anthropic": "relu",
            "jumprelu": "jumprelu",
            "topk": "topk",
            "batchtopk": "batchtopk",
            "matryoshka_batchtopk": "matryoshka_batchtopk",
        }
        return fixed.get(self.architecture) or self.activation or "relu"

    @property
    def uses_k(self) -> bool:
        return self.activation_fn in ("topk", "batchtopk", "matryoshka_batchtopk")

    @property
    def is_transcoder(self) -> bool:
        return self.architecture == "transcoder"

    @property
    def has_skip(self) -> bool:
        return self.architecture == "skip" or self.skip

    def resolved(self, d_in: int, d_out: int | None = None) -> SAEConfig:
        """A copy with d_in, d_sae and d_out filled from the data's widths (validated)."""
        d_out = d_out if self.is_transcoder and d_out is not None else d_in
        if self.d_in is not None and self.d_in != d_in:
            raise ValueError(f"d_in: config says {self.d_in} but the activations are {d_in} wide")
        if self.d_out is not None and self.d_out != d_out:
            raise ValueError(f"d_out: config says {self.d_out} but the targets are {d_out} wide")
        d_sae = self.d_sae or self.expansion_factor * d_in
        data = self.model_dump()
        data.update(d_in=d_in, d_out=d_out, d_sae=d_sae)
        if self.activation_fn == "matryoshka_batchtopk" and self.matryoshka_widths is None:
            data["matryoshka_widths"] = default_matryoshka_widths(d_sae)
        return SAEConfig.model_validate(data)
