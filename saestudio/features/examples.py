"""Examples in context: the tokens around an example row and the latent's activation on each.

An activation dataset stores, for row i, its token id and ``(context index, position)``
(:mod:`saestudio.activations.manifest`). The context of an example row is every stored
row of the same packed context whose position is within ±``window`` of the row's own:
it is cut at the start and end of the packed context, and a special token excluded at
extraction (a row that is not stored) is simply not in it. Those rows are consecutive in
the dataset, so a context is the row span ``[row − position, row − position + len)``.

The activations on the neighbouring rows come from encoding them again, pair by pair
(example latent × neighbour row: the latent's encoder column against the row; one GEMM
of a chunk's row span against the chunk's latents), in one pass over the example rows sorted by
row; a TopK latent is active on a row when its
pre-activation reaches the row's k-th largest, which the main pass stored per row
(:class:`KthFile`), so neighbours never need a full ``[rows, d_sae]`` encoding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from saestudio.activations.manifest import POSITIONS, TOKENS, Manifest
from saestudio.activations.store import ArrayDataset, DataError
from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.sparse_ops import topk_rows

EXAMPLES_PER_CHUNK = 1024  # examples whose windows are encoded together
SPAN_ROWS = 512  # most dataset rows one chunk's examples may span (the GEMM is span × m)


def _arange(n: int, device: torch.device) -> Tensor:
    return torch.arange(n, device=device)


class TokenTable:
    """Token ids and positions of a dataset, read lazily by row range (file seeks; the
    arrays are never loaded whole, so memory does not grow with the dataset)."""

    def __init__(self, path: str | Path, manifest: Manifest):
        self._shards: list[tuple[Path, int, Path, int, int]] = []  # tok, off, pos, off, rows
        self._starts = [0]
        for s in manifest.shards:
            tok = Path(path) / TOKENS / (s.name + ".npy")
            pos = Path(path) / POSITIONS / (s.name + ".npy")
            offs = []
            for f, shape in ((tok, (s.rows,)), (pos, (s.rows, 2))):
                if not f.is_file():
                    raise DataError(f"activations: {f} is missing; re-run the extraction")
                a = np.load(f, mmap_mode="r", allow_pickle=False)
                if a.shape != shape or a.dtype != np.int32 or not a.flags.c_contiguous:
                    raise DataError(f"activations: {f} is not int32 {shape}")
                offs.append(int(a.offset))
                del a
            self._shards.append((tok, offs[0], pos, offs[1], s.rows))
            self._starts.append(self._starts[-1] + s.rows)
        self.rows = self._starts[-1]

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(token ids ``int64 [n]``, positions ``int64 [n, 2]``) of rows ``[start, stop)``."""
        toks, poss = [], []
        for i, (tok, tok_off, pos, pos_off, rows) in enumerate(self._shards):
            lo, hi = max(start, self._starts[i]), min(stop, self._starts[i] + rows)
            if lo >= hi:
                continue
            a, n = lo - self._starts[i], hi - lo
            with tok.open("rb") as f:
                f.seek(tok_off + 4 * a)
                toks.append(np.fromfile(f, dtype=np.int32, count=n))
            with pos.open("rb") as f:
                f.seek(pos_off + 8 * a)
                poss.append(np.fromfile(f, dtype=np.int32, count=2 * n).reshape(n, 2))
        if not toks:
            return np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
        return np.concatenate(toks).astype(np.int64), np.concatenate(poss).astype(np.int64)


class KthFile:
    """Per row, the k-th largest pre-activation of a TopK SAE, spooled to a float32 file
    during the main pass (4 bytes a row on disk, nothing in memory)."""

    def __init__(self, path: Path, start: int):
        self.path, self.start, self.stop = path, start, start
        self._f = path.open("wb")

    def append(self, kth: Tensor) -> None:
        self._f.write(kth.float().cpu().numpy().tobytes())
        self.stop += kth.shape[0]

    def close(self) -> None:
        self._f.close()

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (inside the spooled range)."""
        with self.path.open("rb") as f:
            f.seek(4 * (start - self.start))
            return np.fromfile(f, dtype=np.float32, count=stop - start)


def uses_topk(sae: SparseAutoencoder) -> bool:
    """Per-row TopK (not BatchTopK, whose inference rule is a threshold)."""
    return sae.cfg.activation_fn == "topk"


def encoder_input(sae: SparseAutoencoder, x: Tensor, normalize: str) -> Tensor:
    """What the encoder multiplies: the run-time normalisation, then the module's own
    :meth:`~saestudio.sae.base.SparseAutoencoder.encoder_input` (x − b_dec or x − its
    input centre)."""
    if normalize == "constant_norm_rescale":  # each row to norm √d_in (SAELens)
        x = x * (math.sqrt(x.shape[1]) / x.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return sae.encoder_input(x)


def pair_activations(
    sae: SparseAutoencoder, pre: Tensor, latent: Tensor, kth: Tensor | None
) -> Tensor:
    """Latent ``latent[j]``'s activation from its pre-activation ``pre[j]`` — the
    architecture's nonlinearity one entry at a time (eval mode). ``kth``: for TopK, the
    row's k-th largest pre-activation."""
    fn = sae.cfg.activation_fn
    if fn == "topk":
        assert kth is not None
        # the pair's dot product may round differently from the batch product: a hair of slack
        tol = 1e-5 * kth.abs().clamp_min(1.0)
        return pre.relu() * (pre >= kth - tol).to(pre.dtype)
    if fn == "jumprelu":
        th = sae.get_parameter("threshold").detach()[latent].to(pre.dtype)
        return pre * (pre > th).to(pre.dtype)
    if fn in ("batchtopk", "matryoshka_batchtopk"):  # at inference: one global threshold
        th = sae.get_buffer("threshold_ema").detach().clamp_min(0.0).to(pre.dtype)
        return pre * (pre > th).to(pre.dtype)
    return pre.relu()


class Contexts(NamedTuple):
    ids: np.ndarray
    """``int64 [examples, 2·window + 1]`` token ids; −1 where the slot is outside the context."""
    acts: np.ndarray
    """``float32 [examples, 2·window + 1]`` the example latent's activation on each slot."""


@torch.no_grad()
def example_contexts(
    sae: SparseAutoencoder,
    data: ArrayDataset,
    table: TokenTable,
    kth: KthFile | None,
    normalize: str,
    latent: np.ndarray,
    row: np.ndarray,
    activation: np.ndarray,
    window: int,
    device: torch.device,
) -> Contexts:
    """The context of every example ``(latent[e], row[e])``; the example's own slot
    (index ``window``) holds ``activation[e]``, the value of the main pass."""
    n_ex, width = len(row), 2 * window + 1
    ids = np.full((n_ex, width), -1, np.int64)
    acts = np.full((n_ex, width), np.nan, np.float32)
    order = np.argsort(row, kind="stable")
    rows_sorted = row[order]
    offsets = np.arange(-window, window + 1)
    w_t = sae.W_enc.detach().T.contiguous()  # [d_sae, d_in]: one latent's column as a row
    b_enc = sae.b_enc.detach()
    i = 0
    while i < n_ex:
        j = int(np.searchsorted(rows_sorted, rows_sorted[i] + SPAN_ROWS, side="left"))
        j = max(i + 1, min(j, i + EXAMPLES_PER_CHUNK))
        sel = order[i:j]
        lo = max(0, int(rows_sorted[i]) - window)
        hi = min(table.rows, int(rows_sorted[j - 1]) + window + 1)
        tok, pos = table.read(lo, hi)
        nr = row[sel, None] + offsets[None, :]  # [m, width] neighbour rows
        li = np.clip(nr - lo, 0, hi - lo - 1)
        centre = pos[row[sel] - lo]
        valid = (
            (nr >= lo)
            & (nr < hi)
            & (pos[li, 0] == centre[:, 0, None])
            & (np.abs(pos[li, 1] - centre[:, 1, None]) <= window)
        )
        ids[sel] = np.where(valid, tok[li], -1)
        x = encoder_input(sae, data.read(lo, hi).to(device), normalize)  # [span, d_in]
        li_t = torch.from_numpy(li).to(device)
        lat_t = torch.from_numpy(latent[sel]).to(device)
        # the chunk's latents on the span's rows, one GEMM [span, d_in] @ [d_in, m]; then
        # each example reads its own column at its window's rows
        cols = torch.addmm(b_enc[lat_t], x, w_t[lat_t].T)  # [span, m]
        pre = cols[li_t, _arange(len(sel), device)[:, None]]  # [m, width]
        k_t = None
        if uses_topk(sae):
            k_t = torch.from_numpy(_kth_rows(sae, kth, x, lo, hi)).to(device)[li_t]
        a = pair_activations(sae, pre, lat_t[:, None].expand_as(pre), k_t).float().cpu().numpy()
        a[~valid] = np.nan
        a[:, window] = activation[sel]
        acts[sel] = a
        i = j
    return Contexts(ids, acts)


def _kth_rows(
    sae: SparseAutoencoder, kth: KthFile | None, x: Tensor, lo: int, hi: int
) -> np.ndarray:
    """Each row's k-th largest pre-activation over rows ``[lo, hi)``: from the spooled file
    inside the inspected range, by encoding the (at most ``window``) rows outside it."""
    out = np.empty(hi - lo, np.float32)
    a, b = (kth.start, kth.stop) if kth is not None else (hi, hi)
    a, b = max(a, lo), min(b, hi)
    if a < b and kth is not None:
        out[a - lo : b - lo] = kth.read(a, b)
    outside = (
        np.r_[np.arange(lo, min(a, hi)), np.arange(max(b, lo), hi)] if a < b else np.arange(lo, hi)
    )
    if len(outside):
        idx = torch.from_numpy(outside - lo).to(x.device)
        pre = torch.addmm(sae.b_enc.to(x.dtype), x.index_select(0, idx), sae.W_enc.to(x.dtype))
        values, _ = topk_rows(pre, sae.cfg.k)
        out[outside - lo] = values.min(dim=1).values.float().cpu().numpy()
    return out
