"""Turn the accumulators of a finished pass into the per-latent records and write them.

Quantile bands: the reservoir is a uniform sample of the latent's firing activations;
its quantiles at ``b/bands`` split it into ``bands`` bands of equal probability mass,
and each band shows up to ``per_band`` of the sampled examples that fall in it (band 0
is the weakest). With fewer firings than the reservoir holds, the sample is all of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from saestudio.activations.manifest import Manifest
from saestudio.activations.store import ArrayDataset
from saestudio.features.examples import Contexts, TokenTable, example_contexts
from saestudio.features.logit_lens import logit_lens, token_entries
from saestudio.features.records import LATENTS, InspectSummary, sig
from saestudio.features.stats import hist_edges

if TYPE_CHECKING:
    from saestudio.features.inspect import _Target


class Decoder:
    """Token id → text with a cache (``tokenizer.decode([id])``); None without a tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str | None:
        if self.tokenizer is None:
            return None
        s = self.cache.get(token_id)
        if s is None:
            s = self.cache[token_id] = self.tokenizer.decode([token_id])
        return s


def _band_picks(
    values: np.ndarray, rows: np.ndarray, bands: int, per_band: int
) -> list[tuple[float, float, np.ndarray]]:
    """Per band (weakest first): (low, high, indices into the reservoir slots)."""
    ok = np.nonzero(rows >= 0)[0]
    if len(ok) == 0:
        return []
    v = values[ok]
    edges = np.quantile(v, np.linspace(0.0, 1.0, bands + 1))
    band = np.clip(np.searchsorted(edges[1:-1], v, side="right"), 0, bands - 1)
    out = []
    for b in range(bands):
        members = ok[band == b][:per_band]  # slots are in random-key order: a uniform pick
        members = members[np.argsort(-values[members], kind="stable")]
        out.append((float(edges[b]), float(edges[b + 1]), members))
    return out


def _examples(
    ctx: Contexts, rows: np.ndarray, acts: np.ndarray, window: int, decode: Decoder
) -> list[dict[str, Any]]:
    """One record per example, in the order of ``rows``."""
    valid = ctx.ids >= 0
    first = valid.argmax(1)
    length = valid.sum(1)
    act_r = np.asarray(sig(ctx.acts.ravel()), dtype=np.float64).reshape(ctx.acts.shape)
    own = sig(acts)
    out = []
    for e in range(len(rows)):
        f, n = int(first[e]), int(length[e])
        ids = ctx.ids[e, f : f + n].tolist()
        toks = [decode(t) for t in ids] if decode.tokenizer is not None else None
        tid = ids[window - f]
        out.append(
            {
                "row": int(rows[e]),
                "activation": own[e],
                "token": decode(tid),
                "token_id": tid,
                "context": toks,
                "context_ids": ids,
                "context_activations": act_r[e, f : f + n].tolist(),
                "position": window - f,
            }
        )
    return out


def _trimmed_histogram(counts: np.ndarray, edges: list[float]) -> dict[str, list]:
    nz = np.nonzero(counts)[0]
    if len(nz) == 0:
        return {"log10_edges": [], "counts": []}
    a, b = int(nz[0]), int(nz[-1]) + 1
    return {"log10_edges": edges[a : b + 1], "counts": counts[a:b].tolist()}


def write_inspection(
    t: _Target,
    data: ArrayDataset,
    table: TokenTable,
    manifest: Manifest,
    activations: str | Path,
    rows: tuple[int, int],
    *,
    window: int,
    bands: int,
    per_band: int,
    unembed: Tensor | None,
    tokenizer: Any,
    device: torch.device,
) -> InspectSummary:
    """Write ``latents.jsonl`` of one SAE; returns its summary (``seconds`` still 0)."""
    sae = t.loaded.sae
    d_sae, top_n = sae.d_sae, t.top.n
    decode = Decoder(tokenizer)
    count = t.stats.count.cpu().numpy()
    total = t.stats.total.cpu().numpy()
    vmax = t.stats.max.cpu().numpy()
    hist = t.stats.histogram().cpu().numpy()
    top_rows, top_vals = t.top.row.cpu().numpy(), t.top.value.cpu().numpy()
    res_rows, res_vals = t.reservoir.row.cpu().numpy(), t.reservoir.value.cpu().numpy()

    # every example of every latent, flattened: top first, then the quantile picks
    lat_l, row_l, act_l = [], [], []
    ok = top_rows >= 0
    lat_l.append(np.nonzero(ok)[0])
    row_l.append(top_rows[ok])
    act_l.append(top_vals[ok])
    band_info: list[list[tuple[float, float, int, int]]] = []  # (low, high, first, n)
    n_top = int(ok.sum())
    cursor = n_top
    for lat in range(d_sae):
        entry = []
        if count[lat]:
            for low, high, members in _band_picks(res_vals[lat], res_rows[lat], bands, per_band):
                lat_l.append(np.full(len(members), lat))
                row_l.append(res_rows[lat, members])
                act_l.append(res_vals[lat, members])
                entry.append((low, high, cursor, len(members)))
                cursor += len(members)
        band_info.append(entry)
    ex_lat = np.concatenate(lat_l).astype(np.int64)
    ex_row = np.concatenate(row_l).astype(np.int64)
    ex_act = np.concatenate(act_l).astype(np.float32)
    ctx = example_contexts(
        sae, data, table, t.kth, t.loaded.normalize, ex_lat, ex_row, ex_act, window, device
    )
    records = _examples(ctx, ex_row, ex_act, window, decode)
    top_start = np.r_[0, np.cumsum(ok.sum(1))]

    lens = None
    if unembed is not None:
        lens = logit_lens(sae.W_dec.detach(), unembed)
    edges = hist_edges()
    rows_read = rows[1] - rows[0]
    density = count / rows_read
    mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    dens_s, mean_s, max_s = sig(density), sig(mean), sig(vmax)
    t.out.mkdir(parents=True, exist_ok=True)
    tmp = t.out / (LATENTS + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for lat in range(d_sae):
            rec: dict[str, Any] = {
                "latent": lat,
                "count": int(count[lat]),
                "density": dens_s[lat],
                "mean_activation": mean_s[lat],
                "max_activation": max_s[lat],
                "histogram": _trimmed_histogram(hist[lat], edges),
                "top": records[top_start[lat] : top_start[lat + 1]],
                "quantiles": [
                    {"band": b, "low": sig(np.array([lo]))[0], "high": sig(np.array([hi]))[0],
                     "examples": records[first : first + n]}
                    for b, (lo, hi, first, n) in enumerate(band_info[lat])
                ],
            }  # fmt: skip
            if lens is not None:
                tv, ti, bv, bi = lens
                rec["logits"] = {
                    "top": token_entries(tv[lat], ti[lat], decode),
                    "bottom": token_entries(bv[lat], bi[lat], decode),
                }
            f.write(json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n")
    os.replace(tmp, t.out / LATENTS)
    return InspectSummary(
        sae=t.loaded.source,
        architecture=sae.cfg.architecture,
        d_in=sae.d_in,
        d_sae=d_sae,
        dataset=str(activations),
        model=manifest.model,
        hook=t.hook,
        rows=rows,
        rows_read=rows_read,
        dead=int((count == 0).sum()),
        dense=int((density > 0.1).sum()),
        dense_1pct=int((density > 0.01).sum()),
        top_n=top_n,
        window=window,
        bands=bands,
        per_band=per_band,
        logit_lens=lens is not None,
        seconds=0.0,
    )
