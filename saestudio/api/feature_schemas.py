"""Bodies of the Features API (``/trainings/{id}/inspection``, ``/features``): the
inspection job, the latents table, one latent's record, labels and the prompt search.
The record fields follow the ``latents.jsonl`` format of :mod:`saestudio.features`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NO_NUL = r"^[^\x00]*$"
"""Text fields refuse NUL characters (PostgreSQL cannot store them): 422, not 500."""
MAX_PROMPT_CHARS = 20_000
"""Characters a prompt may have before it is even tokenized (the token limit is
``Settings.prompt_tokens``)."""


class _Row(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class InspectionPublic(_Row):
    id: int
    training_id: int
    status: str
    control: str | None
    error: str | None
    row_start: int
    row_end: int
    rows_done: int
    progress: float
    summary: dict[str, dict[str, Any]] | None = Field(
        None, description="SAE label → its summary.json, once completed."
    )
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class FeaturesStatus(BaseModel):
    """Whether a run's features can be browsed, and the inspection behind them."""

    inspection: InspectionPublic | None
    saes: list[str] = Field(description="The run's SAE labels (exported SAEs).")
    inspectable: bool = Field(description="An inspection can be queued now.")
    why_not: str | None = Field(None, description="Why not, when it cannot.")


class InspectionCreate(BaseModel):
    rows: int | None = Field(
        None,
        ge=1,
        le=100_000_000,
        description="Rows at the end of the run's activation dataset to inspect; default "
        "Settings.inspect_rows.",
    )


class InspectionControl(BaseModel):
    action: Literal["stop", "resume"]


class LatentSummary(BaseModel):
    """One row of the latents table."""

    latent: int
    density: float = Field(description="Fraction of inspected rows where it fires (z > 0).")
    mean_activation: float = Field(description="Mean activation over its firing rows.")
    max_activation: float
    top_tokens: list[str] = Field(description="Distinct tokens of its top examples.")
    label: str | None
    note: str | None


class LatentPage(BaseModel):
    sae: str
    items: list[LatentSummary]
    total: int
    limit: int
    offset: int


class Example(BaseModel):
    """One dataset row where the latent fires, in its context."""

    model_config = ConfigDict(extra="allow")

    row: int = Field(description="Row index in the activation dataset.")
    activation: float
    token: str | None = Field(description="The row's decoded token.")
    context: list[str | None] = Field(description="Decoded tokens around the row.")
    context_activations: list[float] = Field(description="The latent on each context token.")
    position: int = Field(description="Index of the row's own token inside context.")


class Histogram(BaseModel):
    model_config = ConfigDict(extra="allow")

    log10_edges: list[float] = Field(description="Bin edges of log10(activation).")
    counts: list[int]


class QuantileBand(BaseModel):
    """Examples sampled from one band of the activation distribution."""

    model_config = ConfigDict(extra="allow")

    band: int = Field(0, description="0 is the weakest band.")
    low: float | None = None
    high: float | None = None
    examples: list[Example]


class LogitToken(BaseModel):
    token: str
    value: float


class Logits(BaseModel):
    """Logit lens: the tokens ``W_dec[i] @ W_U`` raises and lowers most."""

    top: list[LogitToken]
    bottom: list[LogitToken]


class LatentRecord(LatentSummary):
    """One latent's full record: its latents.jsonl line with its label."""

    sae: str
    histogram: Histogram | None
    top: list[Example]
    quantiles: list[QuantileBand]
    logits: Logits | None = Field(None, description="Only for models with an unembedding.")


class LabelIn(BaseModel):
    label: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    note: str = Field("", max_length=10_000, pattern=NO_NUL)


class LabelPublic(_Row):
    sae: str
    latent: int
    label: str
    note: str
    updated_at: datetime


class PromptSearch(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=NO_NUL)
    sae: str | None = Field(None, description="SAE label; default the run's first.")
    top: int = Field(8, ge=1, le=64, description="Latents listed per token.")


class TokenLatent(BaseModel):
    latent: int
    activation: float


class PromptToken(BaseModel):
    index: int
    token: str
    latents: list[TokenLatent] = Field(description="Firing latents, strongest first.")


class PromptLatent(BaseModel):
    """A latent that fires somewhere in the prompt, with its activation on every token."""

    latent: int
    max_activation: float
    tokens_fired: int
    activations: list[float]
    label: str | None


class PromptResult(BaseModel):
    sae: str
    tokens: list[PromptToken]
    latents: list[PromptLatent] = Field(description="Strongest first (at most 50).")
    seconds: float = Field(description="Time spent in the model and the SAE.")
