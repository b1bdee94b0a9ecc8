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
from typing import Any

import numpy as np
import torch
from torch import Tensor

from saestudio.activations.manifest import Manifest
from saestudio.activations.store import ArrayDataset
from saestudio.features.examples import Contexts, TokenTable, example_contexts
from saestudio.features.logit_lens import logit_lens, token_entries
from saestudio.features.records import LATENTS, InspectSummary, sig, sig_array
from saestudio.features.stats import hist_edges
from saestudio.features.target import Target

LATENTS_PER_BLOCK = 256  # latents whose example text is built together


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


def band_picks(
    values: Tensor, rows: Tensor, bands: int, per_band: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Quantile bands of every latent's reservoir at once.

    ``values``/``rows`` are the reservoir ``[d_sae, R]`` (valid slots first, in random-key
    order; row −1 marks an empty slot). Returns the band edges ``[d_sae, bands + 1]``
    (linear-interpolated quantiles of the valid values, as ``numpy.quantile``), each
    slot's band ``[d_sae, R]`` and whether the slot is shown (the first ``per_band`` slots
    of its band in slot order — a uniform pick).
    """
    valid = rows >= 0
    n = valid.sum(1)  # [d_sae]
    ordered = values.masked_fill(~valid, float("inf")).sort(dim=1).values
    q = torch.linspace(0, 1, bands + 1, dtype=torch.float64)
    posn = q[None, :] * (n.clamp_min(1) - 1).double()[:, None]  # [d_sae, bands + 1]
    below = posn.floor().long()
    above = (below + 1).clamp_max((n.clamp_min(1) - 1)[:, None])
    lo_v, hi_v = ordered.double().gather(1, below), ordered.double().gather(1, above)
    edges = (lo_v + (hi_v - lo_v) * (posn - below.double())).float()
    edges[n == 0] = 0.0
    inner = edges[:, 1:-1].contiguous()
    band = torch.searchsorted(inner, values.contiguous(), right=True).clamp_(0, bands - 1)
    onehot = torch.nn.functional.one_hot(band, bands) & valid[:, :, None]  # [d_sae, R, bands]
    rank = onehot.cumsum(1).gather(2, band[:, :, None]).squeeze(2) - 1
    shown = valid & (rank < per_band)
    return edges, band, shown


class _Json:
    """JSON fragments of token strings, cached per token id."""

    def __init__(self, decode: Decoder):
        self.decode = decode
        self.cache: dict[int, str] = {}

    def token(self, token_id: int) -> str:
        s = self.cache.get(token_id)
        if s is None:
            s = self.cache[token_id] = json.dumps(self.decode(token_id), ensure_ascii=False)
        return s


def _examples(
    ctx: Contexts, rows: np.ndarray, acts: np.ndarray, window: int, js: _Json
) -> list[str]:
    """One JSON object (as text) per example, in the order of ``rows``."""
    valid = ctx.ids >= 0
    first = valid.argmax(1).tolist()
    length = valid.sum(1).tolist()
    act_r = sig_array(ctx.acts)
    own = sig(acts)
    ids_all: list[list[int]] = ctx.ids.tolist()
    act_all: list[list[float]] = act_r.tolist()
    rows_l: list[int] = rows.tolist()
    has_text = js.decode.tokenizer is not None
    text = {t: js.token(t) for t in np.unique(ctx.ids).tolist() if t >= 0}
    out = []
    for e in range(len(rows_l)):
        f, n = first[e], length[e]
        ids = ids_all[e][f : f + n]
        tid = ids[window - f]
        context = "[" + ",".join(map(text.__getitem__, ids)) + "]" if has_text else "null"
        out.append(
            f'{{"row":{rows_l[e]},"activation":{own[e]!r},"token":{text.get(tid, "null")},'
            f'"token_id":{tid},"context":{context},"context_ids":[{",".join(map(str, ids))}],'
            f'"context_activations":[{",".join(map(repr, act_all[e][f : f + n]))}],'
            f'"position":{window - f}}}'
        )
    return out


def _trimmed_histogram(counts: np.ndarray, edges: list[float]) -> dict[str, list]:
    nz = np.nonzero(counts)[0]
    if len(nz) == 0:
        return {"log10_edges": [], "counts": []}
    a, b = int(nz[0]), int(nz[-1]) + 1
    return {"log10_edges": edges[a : b + 1], "counts": counts[a:b].tolist()}


def write_inspection(
    t: Target,
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
    ok = top_rows >= 0
    edges_t, band_t, shown_t = band_picks(
        t.reservoir.value.cpu(), t.reservoir.row.cpu(), bands, per_band
    )
    q_lat, q_slot = np.nonzero(shown_t.numpy())  # latent-major, slot order
    q_band = band_t.numpy()[q_lat, q_slot]
    ex_lat = np.concatenate([np.nonzero(ok)[0], q_lat]).astype(np.int64)
    ex_row = np.concatenate([top_rows[ok], res_rows[q_lat, q_slot]]).astype(np.int64)
    ex_act = np.concatenate([top_vals[ok], res_vals[q_lat, q_slot]]).astype(np.float32)
    ctx = example_contexts(
        sae, data, table, t.kth, t.loaded.normalize, ex_lat, ex_row, ex_act, window, device
    )
    js = _Json(decode)
    top_start = np.r_[0, np.cumsum(ok.sum(1))].tolist()
    n_top = top_start[-1]
    q_start = (n_top + np.searchsorted(q_lat, np.arange(d_sae + 1))).tolist()

    def fragments(a: int, b: int) -> dict[int, str]:
        """JSON text of the examples of latents ``[a, b)``, by example index (made a block
        at a time: the text of every example at once would be gigabytes at d_sae 12288)."""
        out: dict[int, str] = {}
        for lo, hi in ((top_start[a], top_start[b]), (q_start[a], q_start[b])):
            part = Contexts(ctx.ids[lo:hi], ctx.acts[lo:hi])
            out.update(
                zip(
                    range(lo, hi),
                    _examples(part, ex_row[lo:hi], ex_act[lo:hi], window, js),
                    strict=True,
                )
            )
        return out

    # quantile examples of latent l, band b: highest first
    q_groups: dict[tuple[int, int], list[int]] = {}
    for e, (lat, b) in enumerate(zip(q_lat.tolist(), q_band.tolist(), strict=True)):
        q_groups.setdefault((lat, b), []).append(n_top + e)
    for members in q_groups.values():
        members.sort(key=lambda e: -ex_act[e])
    edge_s = sig_array(edges_t.numpy()).tolist()

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
            if lat % LATENTS_PER_BLOCK == 0:
                frags = fragments(lat, min(d_sae, lat + LATENTS_PER_BLOCK))
            head = {
                "latent": lat,
                "count": int(count[lat]),
                "density": dens_s[lat],
                "mean_activation": mean_s[lat],
                "max_activation": max_s[lat],
                "histogram": _trimmed_histogram(hist[lat], edges),
            }
            top = ",".join(frags[e] for e in range(top_start[lat], top_start[lat + 1]))
            quant = []
            if count[lat]:
                for b in range(bands):
                    shown = ",".join(frags[e] for e in q_groups.get((lat, b), []))
                    quant.append(
                        f'{{"band":{b},"low":{edge_s[lat][b]!r},"high":{edge_s[lat][b + 1]!r},'
                        f'"examples":[{shown}]}}'
                    )
            line = json.dumps(head, separators=(",", ":"), ensure_ascii=False)[:-1]
            line += f',"top":[{top}],"quantiles":[{",".join(quant)}]'
            if lens is not None:
                tv, ti, bv, bi = lens
                logits = {
                    "top": token_entries(tv[lat], ti[lat], decode),
                    "bottom": token_entries(bv[lat], bi[lat], decode),
                }
                line += ',"logits":' + json.dumps(logits, separators=(",", ":"), ensure_ascii=False)
            f.write(line + "}\n")
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
