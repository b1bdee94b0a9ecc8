"""A5 BatchTopK SAE (Bussmann et al. 2024): top k·batch over the whole batch."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from saestudio.sae import sparse_ops
from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.config import SAEConfig
from saestudio.sae.sparse_ops import Active
from saestudio.sae.topk import TopKSAE

THRESHOLD_EMA_BETA = 0.999
# the update count of a θ whose history is unknown (an older checkpoint, an SAELens file):
# treated as settled, so it moves at the EMA's rate 1 − β
SETTLED_STEPS = 1 << 30


class BatchReduce(Protocol):
    """How a data-parallel trainer makes the batch-level selection span every rank's rows
    (``saestudio.training.distributed.Dist``); None in one process."""

    def topk_threshold(self, flat: Tensor, n_keep: int) -> Tensor:
        """The smallest of the n_keep·world largest values of all ranks' ``flat``."""
        ...

    def min(self, value: Tensor) -> Tensor:
        """The minimum over the ranks."""
        ...


class BatchTopKSAE(TopKSAE):
    """Training keeps the k·batch largest activations of the batch, so rows may use more or
    fewer than k latents. A global threshold θ — an EMA (β = 0.999) of the smallest kept
    activation — replaces the batch-level selection in eval mode, so inference is
    per-row and exports as a JumpReLU-style threshold. Over the first 1/(1 − β) batches θ
    is their plain running mean (weight max(1 − β, 1/n) for the n-th): a bare EMA would
    stay near the first batch's value for thousands of steps, and every held-out metric
    of an early evaluation would read through a stale θ."""

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        # -1 means "not yet seen a batch"; eval mode then falls back to ReLU (θ = 0)
        self.threshold_ema: Tensor
        self.register_buffer("threshold_ema", torch.tensor(-1.0))
        self.threshold_steps: Tensor  # batches folded into θ so far
        self.register_buffer("threshold_steps", torch.tensor(0, dtype=torch.long))
        self.batch_reduce: BatchReduce | None = None  # set under torchrun: the global batch

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # checkpoints from before the count existed hold a θ with unknown history
        state_dict.setdefault(prefix + "threshold_steps", torch.tensor(SETTLED_STEPS))
        super()._load_from_state_dict(state_dict, prefix, *args)

    # the batch-level selection gives each row a different number of latents: decode via
    # the dense base-class path, not TopK's per-row sparse one
    forward = SparseAutoencoder.forward

    def activate(self, pre_acts: Tensor) -> Tensor:
        if not self.training:
            th = self.threshold_ema.clamp_min(0.0).to(pre_acts.dtype)
            return pre_acts * (pre_acts > th).to(pre_acts.dtype)
        acts = pre_acts.relu()
        flat = acts.flatten()
        n_keep = min(self.cfg.k * pre_acts.shape[0], flat.numel())
        if self.batch_reduce is not None:  # the top k·batch of all ranks' rows
            indices = (flat >= self.batch_reduce.topk_threshold(flat, n_keep)).nonzero()[:, 0]
            values = flat[indices]
        else:
            values, indices = sparse_ops.topk_flat(flat, n_keep)
        z = torch.zeros_like(flat).scatter_(0, indices, values).view_as(pre_acts)
        self._update_threshold(values)
        return z

    def _select(self, pre: Tensor) -> tuple[Active, Tensor]:
        """Sparse training path: the k·batch largest pre-activations of the whole batch.

        Selecting on raw pre-activations and ReLU-ing the picks after gives the same z as
        selecting on ReLU'd ones (ties at zero contribute zero either way), without a
        dense ReLU pass."""
        batch = pre.shape[0]
        n_keep = min(self.cfg.k * batch, pre.numel())
        if self.batch_reduce is not None:  # the top k·batch of all ranks' rows
            flat = pre.flatten()
            flat_idx = (flat >= self.batch_reduce.topk_threshold(flat, n_keep)).nonzero()[:, 0]
            raw = flat[flat_idx]
        else:
            raw, flat_idx = sparse_ops.topk_flat(pre, n_keep)
        active, perm = sparse_ops.from_flat(flat_idx, batch, self.d_sae)
        raw = raw[perm]
        self._update_threshold(raw.relu())
        return active, raw

    @torch.no_grad()
    def _update_threshold(self, kept: Tensor) -> None:
        positive = kept.detach().float()
        smallest = torch.where(positive > 0, positive, torch.full_like(positive, torch.inf)).min()
        if self.batch_reduce is not None:
            smallest = self.batch_reduce.min(smallest)
        seen = torch.isfinite(smallest)  # no host sync: a batch with nothing positive
        steps = self.threshold_steps + seen.long()  # leaves θ and its count as they were
        weight = torch.clamp(1.0 / steps.clamp_min(1).float(), min=1 - THRESHOLD_EMA_BETA)
        first = self.threshold_ema < 0
        blended = (1 - weight) * self.threshold_ema + weight * smallest
        updated = torch.where(first, smallest, blended)
        self.threshold_ema.copy_(torch.where(seen, updated, self.threshold_ema))
        self.threshold_steps.copy_(steps)

    def inference_threshold(self) -> Tensor:
        return self.threshold_ema.clamp_min(0.0).expand(self.d_sae).clone()
