"""Streaming per-latent accumulators: memory set by ``d_sae``, never by the row count.

Every batch arrives as its *firing entries* — parallel 1-D tensors ``latent``,
``value`` (> 0) and ``row`` (global dataset row) — so no ``[rows, d_sae]`` tensor is
ever kept. :class:`LatentStats` sums counts, activations, the maximum and a histogram
of log10 activation; :class:`RankedSlots` keeps, per latent, the ``n`` entries of
highest priority: with the activation as priority that is the top-N examples, with an
independent uniform random key it is a uniform sample without replacement of the
latent's firings (the reservoir behind the quantile bands; "the n largest random keys"
is reservoir sampling in one vectorised merge).
"""

from __future__ import annotations

import torch
from torch import Tensor

# log10 histogram: 0.1-wide bins over [1e-6, 1e4); values beyond land in the end bins
HIST_LO, HIST_HI, HIST_BINS = -6.0, 4.0, 100


class LatentStats:
    """Firing count, activation sum (float64), max and log10-histogram per latent."""

    def __init__(self, d_sae: int, device: torch.device):
        self.d_sae = d_sae
        self.count = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.total = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self.max = torch.zeros(d_sae, dtype=torch.float32, device=device)
        self.hist = torch.zeros(d_sae * HIST_BINS, dtype=torch.int64, device=device)
        self.rows = 0

    def add(self, latent: Tensor, value: Tensor, rows: int) -> None:
        """Entries of one batch of ``rows`` rows (``value`` > 0)."""
        self.rows += rows
        ones = torch.ones_like(latent)
        self.count.index_add_(0, latent, ones)
        self.total.index_add_(0, latent, value.double())
        self.max.scatter_reduce_(0, latent, value.float(), reduce="amax")
        width = (HIST_HI - HIST_LO) / HIST_BINS
        b = ((value.float().log10() - HIST_LO) / width).floor_().clamp_(0, HIST_BINS - 1).long()
        self.hist.index_add_(0, latent * HIST_BINS + b, ones)

    def histogram(self) -> Tensor:
        """``[d_sae, HIST_BINS]`` counts."""
        return self.hist.view(self.d_sae, HIST_BINS)


def hist_edges() -> list[float]:
    """The ``HIST_BINS + 1`` log10 bin edges."""
    width = (HIST_HI - HIST_LO) / HIST_BINS
    return [round(HIST_LO + i * width, 6) for i in range(HIST_BINS + 1)]


class RankedSlots:
    """Per latent, the ``n`` entries with the highest priority seen so far.

    Priorities must be ≥ 0. ``priority``/``value``/``row`` are ``[d_sae, n]``, best first; empty slots hold
    priority −inf and row −1. ``floor[l]`` is latent l's n-th best priority: a new entry
    is a candidate only above it, so after the first batches almost every entry is
    dropped by one comparison, and the merge touches only the latents with candidates.
    """

    def __init__(self, d_sae: int, n: int, device: torch.device):
        self.n = n
        self.priority = torch.full((d_sae, n), float("-inf"), device=device)
        self.value = torch.zeros((d_sae, n), device=device)
        self.row = torch.full((d_sae, n), -1, dtype=torch.int64, device=device)
        self.floor = torch.full((d_sae,), float("-inf"), device=device)

    def offer(self, latent: Tensor, priority: Tensor, value: Tensor, row: Tensor) -> None:
        keep = priority > self.floor[latent]
        if not bool(keep.any()):
            return
        latent, priority, value, row = latent[keep], priority[keep], value[keep], row[keep]
        # one sort groups by latent, best first inside a group: priorities are ≥ 0
        # (activations, uniform keys) and 0.5/(1 + p) ∈ (0, 0.5] falls as p rises
        order = (latent.double() + 0.5 / (1.0 + priority.double())).argsort()
        latent, priority, value, row = latent[order], priority[order], value[order], row[order]
        uniq, counts = torch.unique_consecutive(latent, return_counts=True)
        starts = counts.cumsum(0) - counts
        local = torch.repeat_interleave(torch.arange(len(uniq), device=latent.device), counts)
        rank = torch.arange(len(latent), device=latent.device) - starts[local]
        sel = rank < self.n
        local, rank = local[sel], rank[sel]
        m, n = len(uniq), self.n
        new_p = torch.full((m, n), float("-inf"), device=latent.device)
        new_v = torch.zeros((m, n), device=latent.device)
        new_r = torch.full((m, n), -1, dtype=torch.int64, device=latent.device)
        new_p[local, rank] = priority[sel].float()
        new_v[local, rank] = value[sel].float()
        new_r[local, rank] = row[sel]
        all_p = torch.cat([self.priority[uniq], new_p], 1)  # [m, 2n]
        best, j = all_p.topk(n, dim=1)  # sorted, best first
        self.value[uniq] = torch.cat([self.value[uniq], new_v], 1).gather(1, j)
        self.row[uniq] = torch.cat([self.row[uniq], new_r], 1).gather(1, j)
        self.priority[uniq] = best
        self.floor[uniq] = best[:, -1]
