"""What an inspection writes, and the readers the CLI, the studio and exports share.

One folder per SAE: ``summary.json`` (:class:`InspectSummary`) and ``latents.jsonl``
(one JSON object per latent, in latent order; the keys are listed in
:mod:`saestudio.features`). Written to temporary names and renamed at the end, so a
folder either holds a finished inspection or none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

FORMAT: Literal["saestudio.features/1"] = "saestudio.features/1"
SUMMARY, LATENTS = "summary.json", "latents.jsonl"


class InspectSummary(BaseModel):
    """``summary.json``: what was inspected, over which rows, and what it found."""

    format: Literal["saestudio.features/1"] = FORMAT
    sae: str
    """The SAE's folder (or ``"<module>"`` for an SAE handed in as a module)."""
    architecture: str
    d_in: int
    d_sae: int
    dataset: str
    """The activation dataset's folder."""
    model: str
    """The model named by the dataset's manifest."""
    hook: str
    """The dataset hook whose rows were encoded (the SAE's input hook for transcoders)."""
    rows: tuple[int, int]
    """Row range ``[start, stop)`` of the dataset that was read."""
    rows_read: int
    dead: int
    """Latents that never fired on the rows read."""
    dense: int
    """Latents firing on more than 10 % of the rows read."""
    dense_1pct: int
    """Latents firing on more than 1 % of the rows read."""
    top_n: int
    window: int
    bands: int
    per_band: int
    logit_lens: bool
    """Whether the records carry ``logits`` (the model has an unembedding)."""
    seconds: float
    """Wall-clock time of the whole inspection of all SAEs of the pass."""


def sig(arr: np.ndarray, digits: int = 6) -> list[float]:
    """``arr`` as a list of Python floats rounded to ``digits`` significant digits."""
    out: list[float] = sig_array(arr, digits).tolist()
    return out


def sig_array(arr: np.ndarray, digits: int = 6) -> np.ndarray:
    """``arr`` (float64) rounded to ``digits`` significant digits.

    Rounding by an exact power of ten makes each value the double nearest to a short
    decimal, so ``json.dumps`` writes ``0.123457`` instead of a float32's 17 digits.
    """
    a = np.asarray(arr, dtype=np.float64)
    out = np.zeros_like(a)
    nz = np.isfinite(a) & (a != 0)
    e = np.floor(np.log10(np.abs(a[nz])))
    p = (digits - 1 - e).astype(np.int64)
    v = a[nz]
    pos = p >= 0
    scale = 10.0 ** np.abs(p)
    out_nz = np.where(pos, np.rint(v * scale) / scale, np.rint(v / scale) * scale)
    out[nz] = out_nz
    out[~np.isfinite(a)] = a[~np.isfinite(a)]
    return out


def write_atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_summary(folder: str | Path) -> InspectSummary:
    """The :class:`InspectSummary` of an inspection folder."""
    path = Path(folder) / SUMMARY
    if not path.is_file():
        raise FileNotFoundError(f"inspection: {folder} holds no {SUMMARY}; run `saestudio inspect`")
    return InspectSummary.model_validate_json(path.read_text())


def load_latents(folder: str | Path) -> Iterator[dict[str, Any]]:
    """The latent records of an inspection folder, one dict per latent, in latent order.

    Read line by line: iterating never holds more than one record.
    """
    path = Path(folder) / LATENTS
    if not path.is_file():
        raise FileNotFoundError(f"inspection: {folder} holds no {LATENTS}; run `saestudio inspect`")
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
