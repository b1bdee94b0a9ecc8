"""One SAE's state during the inspection pass: its streaming accumulators (:mod:`.stats`)
and how a batch of rows feeds them. Its own module so that :mod:`.inspect` (the pass) and
:mod:`.assemble` (the writer) both import it without importing each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saestudio.features.examples import KthFile, encoder_input, uses_topk
from saestudio.features.saes import LoadedSAE
from saestudio.features.stats import LatentStats, RankedSlots
from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.sparse_ops import topk_rows

DENSE_ROWS = 512
RESERVOIR_PER_EXAMPLE = 2
"""Reservoir slots per shown quantile example: bands are the sample's own quantiles, so
each band holds 2·per_band sampled firings to pick per_band from."""


class Target:
    """One SAE's state during the pass."""

    def __init__(self, name: str, loaded: LoadedSAE, hook: str, out: Path, p: dict[str, Any]):
        self.name, self.loaded, self.hook, self.out = name, loaded, hook, out
        sae, dev = loaded.sae, p["device"]
        self.stats = LatentStats(sae.d_sae, dev)
        self.top = RankedSlots(sae.d_sae, p["top_n"], dev)
        n_res = p["bands"] * p["per_band"] * RESERVOIR_PER_EXAMPLE
        self.reservoir = RankedSlots(sae.d_sae, n_res, dev)
        self.gen = torch.Generator(device=dev).manual_seed(0)
        self.kth: KthFile | None = None

    @torch.no_grad()
    def consume(self, x: Tensor, start: int) -> None:
        sae: SparseAutoencoder = self.loaded.sae
        x = encoder_input(sae, x, self.loaded.normalize)
        n = x.shape[0]
        pre = sae.workspace("inspect_pre", (n, sae.d_sae), x)  # [batch, d_sae], reused
        torch.addmm(sae.b_enc, x, sae.W_enc, out=pre)
        if uses_topk(sae):
            values, idx = topk_rows(pre, sae.cfg.k)  # [batch, k]
            assert self.kth is not None
            self.kth.append(values.min(dim=1).values)
            fire = values > 0
            latent, value = idx[fire], values[fire]
            row = torch.arange(start, start + n, device=x.device)[:, None].expand_as(idx)[fire]
            self._add(latent, value, row, n)
            return
        z = sae.activate(pre)
        # a dense activation (an untrained ReLU SAE fires on half its latents) is taken
        # DENSE_ROWS rows at a time, so the entry lists stay a bounded size
        for s in range(0, n, DENSE_ROWS):
            hit = (z[s : s + DENSE_ROWS] > 0).nonzero()
            value = z[s + hit[:, 0], hit[:, 1]]
            self._add(hit[:, 1], value, hit[:, 0] + start + s, min(DENSE_ROWS, n - s))

    def _add(self, latent: Tensor, value: Tensor, row: Tensor, rows: int) -> None:
        self.stats.add(latent, value, rows)
        self.top.offer(latent, value, value, row)
        keys = torch.rand(len(latent), generator=self.gen, device=latent.device)
        self.reservoir.offer(latent, keys, value, row)

    def release(self) -> None:
        """Drop the pass's ``[batch, d_sae]`` buffer from the module (it may live on)."""
        self.loaded.sae.__dict__.get("_workspaces", {}).pop("inspect_pre", None)
