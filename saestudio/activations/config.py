"""The extraction config (:class:`ExtractConfig`), torch-free: the CLI builds its flags
from it and the API validates request bodies with it without loading torch or a model.
:func:`saestudio.activations.extract.extract` runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from saestudio.activations.text_data import TextSource

StorageDtype = Literal["float32", "float16", "bfloat16"]
"""dtypes an activation dataset is stored in (and a model may run in)."""


class ExtractConfig(BaseModel):
    """Everything one extraction needs. Frozen; every field validated on construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Hugging Face model name or local model folder.")
    dataset: str = Field(
        description="Text: demo:pydoc, a local .txt/.jsonl/.json/.parquet/.csv file or folder, "
        "or a Hugging Face dataset name (streamed)."
    )
    hooks: list[str] = Field(
        description="Comma-separated hook points, e.g. resid_post.3,mlp_out.3 (friendly names "
        "resid_pre/resid_post/mlp_in/mlp_out/attn_out.L, or module paths)."
    )
    out: str = Field(description="Output folder (the activation dataset).")
    text_column: str = Field("text", description="Tables and hub datasets: the text column.")
    split: str = Field("train", description="Hub datasets: the split to stream.")
    dataset_config: str | None = Field(None, description="Hub datasets: configuration name.")
    context_length: int = Field(128, ge=2, le=1_000_000, description="Tokens per context.")
    max_tokens: int = Field(
        1_000_000, ge=2, description="Tokens to run through the model (contexts × length)."
    )
    batch_size: int = Field(32, ge=1, description="Contexts per forward pass.")
    dtype: StorageDtype = Field(
        "float32", description="Storage dtype (bfloat16 is stored as .safetensors)."
    )
    model_dtype: StorageDtype = Field("float32", description="dtype the model runs in.")
    device: str = Field("auto", description="cpu, cuda, cuda:1, mps, or auto.")
    exclude_special_tokens: bool = Field(
        False, description="Drop BOS/CLS/SEP/EOS/pad rows (the model still sees them)."
    )
    prepend_bos: bool = Field(True, description="Start every context with BOS (CLS for BERT).")
    shard_tokens: int = Field(
        65536, ge=1, description="Tokens per shard file (rounded down to whole contexts)."
    )

    @field_validator("hooks", mode="before")
    @classmethod
    def _split_hooks(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [h.strip() for h in v.split(",")]
        if isinstance(v, list) and any(not str(h).strip() for h in v):
            raise ValueError("empty hook name")
        return v

    @model_validator(mode="after")
    def _check(self) -> ExtractConfig:
        if not self.hooks:
            raise ValueError("--hooks: name at least one hook, e.g. resid_post.3")
        if len(set(self.hooks)) != len(self.hooks):
            raise ValueError(f"--hooks: listed twice: {self.hooks}")
        if self.max_tokens < self.context_length:
            raise ValueError(
                f"--max-tokens: {self.max_tokens} is less than one context "
                f"({self.context_length} tokens)"
            )
        return self

    @property
    def target_contexts(self) -> int:
        return self.max_tokens // self.context_length

    @property
    def shard_contexts(self) -> int:
        return max(1, self.shard_tokens // self.context_length)

    def source(self) -> TextSource:
        from saestudio.activations.text_data import TextSource

        return TextSource(self.dataset, self.split, self.text_column, self.dataset_config)
