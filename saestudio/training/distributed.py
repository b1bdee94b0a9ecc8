"""Data-parallel training under ``torchrun`` (torch.distributed): one process per device.

Design — a ``torchrun --nproc_per_node W`` run equals a single-process run with the same
global batch and seed:

- every rank reads the *same* global batch stream (same seed, same order) and keeps a
  disjoint 1/W of each batch (:meth:`Dist.shard`); with gradient accumulation each
  micro-batch is split across the ranks, so the union of the ranks' micro-batch m is the
  single process's micro-batch m;
- losses are means over the batch, so with equal shards the average of the ranks'
  gradients is the gradient of the global batch: one all-reduce per step
  (:meth:`Dist.average_gradients`), after which every rank clips and steps identically;
- statistics over the batch are reduced: latent firing counts (dead-latent counters,
  density), the non-finite flag, the AuxK residual variance (``LossSettings.batch_mean``),
  BatchTopK's selection threshold and its threshold EMA (``BatchTopKSAE.batch_reduce``)
  and the logged reconstruction metrics (FVU, MSE, L0, L1 from global sums);
- normalisation factors come from the same deterministic sample on every rank, and the
  initial weights from the same seed (broadcast from rank 0 anyway);
- rank 0 alone writes metrics, checkpoints and exports; every rank resumes from the same
  checkpoint files, so the output folder must be on a filesystem all ranks see.

The process group uses NCCL with ``cuda:LOCAL_RANK`` when the config's device resolves to
CUDA, and gloo on the CPU. World size 1 (no torchrun) is :data:`SINGLE`: every method is
then the identity and the single-process code path is unchanged.

This module is pure torch: no web, database or queue imports.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor

from saestudio.training.metrics import metric_sums, metrics_from_sums, reconstruction_metrics

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")

CONTROL_CODES = {None: 0, "paused": 1, "stopped": 2}
"""Control requests reduced with MAX across ranks: a stop on any rank wins over a pause."""


def pick_device(name: str) -> torch.device:
    """The device a single-process run uses for the config's ``device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was asked for but is not available")
    return dev


def uses_cuda(device: str) -> bool:
    """Whether a config's ``device`` resolves to CUDA on this machine."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def available_devices(device: str) -> int:
    """How many data-parallel processes this machine can run for ``device``.

    CUDA: one per GPU (``torch.cuda.device_count()``). CPU (gloo): one per CPU core
    (``os.cpu_count()``) — processes beyond the cores only slow each other down.
    """
    if uses_cuda(device):
        return torch.cuda.device_count()
    return os.cpu_count() or 1


def check_devices(num_devices: int, device: str) -> None:
    """Refuse, naming ``num_devices``, when this machine has fewer devices than asked."""
    have = available_devices(device)
    if num_devices > have:
        kind = "CUDA GPUs" if uses_cuda(device) else "CPU cores (gloo processes)"
        raise ValueError(
            f"num_devices: the training asks for {num_devices} devices but this machine has "
            f"{have} {kind}; lower num_devices or run it on a machine with more"
        )


def in_torchrun() -> bool:
    """True inside a process started by torchrun with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def torchrun_command(num_devices: int, args: Sequence[str]) -> list[str]:
    """``torchrun --standalone --nproc_per_node N`` on this Python, running ``args``
    (``-m module ...`` or a script). ``--standalone`` picks a free port, so several jobs
    can run on one machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(num_devices),
        *args,
    ]


class Dist:
    """This process's place in a data-parallel job; ``world_size`` 1 is a plain process."""

    def __init__(self, rank: int = 0, world_size: int = 1, device: torch.device | None = None):
        self.rank, self.world_size = rank, world_size
        self.device = device or torch.device("cpu")  # where collectives' tensors live

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    # ---- data ----------------------------------------------------------------------------
    def check_batch(self, batch_size: int, grad_accum_steps: int) -> None:
        if batch_size % (grad_accum_steps * self.world_size):
            raise ValueError(
                f"batch_size: must be divisible by grad_accum_steps × world size "
                f"({grad_accum_steps} × {self.world_size}), got {batch_size}"
            )

    def shard(self, batch: dict[str, Tensor], n_micro: int) -> dict[str, Tensor]:
        """This rank's rows of a global batch: its 1/W slice of each micro-batch."""
        if not self.active:
            return batch
        out = {}
        for name, t in batch.items():
            per = len(t) // (n_micro * self.world_size)
            out[name] = t.view(n_micro, self.world_size, per, *t.shape[1:])[:, self.rank].reshape(
                n_micro * per, *t.shape[1:]
            )
        return out

    # ---- collectives -------------------------------------------------------------------------
    def all_reduce(self, t: Tensor, op: Any = None) -> Tensor:
        """In-place all-reduce (SUM by default) of a tensor; returns it."""
        if self.active:
            tdist.all_reduce(t, op=op or tdist.ReduceOp.SUM)
        return t

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks (one flat all-reduce)."""
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        tdist.all_reduce(flat)
        flat.div_(self.world_size)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def reduce_step(self, counts: Tensor, nonfinite: Tensor) -> tuple[Tensor, Tensor]:
        """Global per-latent firing counts of a step and the global non-finite flag."""
        if not self.active:
            return counts, nonfinite
        packed = torch.cat([counts, nonfinite.reshape(1).to(counts.dtype)])
        tdist.all_reduce(packed)
        return packed[:-1], packed[-1] > 0

    def batch_mean(self, t: Tensor) -> Tensor:
        """Mean over dim 0 of the *global* batch (shards are equal-sized)."""
        m = t.mean(0)
        if not self.active:
            return m
        m = m.detach().clone()
        tdist.all_reduce(m)
        return m / self.world_size

    def topk_threshold(self, flat: Tensor, n_keep: int) -> Tensor:
        """BatchTopK over the global batch: the smallest of the ``n_keep``·W largest values
        of all ranks' ``flat`` (each rank's own top ``n_keep``·W are the only candidates)."""
        local = flat.detach().topk(min(n_keep * self.world_size, flat.numel()), sorted=False)
        parts = [torch.empty_like(local.values) for _ in range(self.world_size)]
        tdist.all_gather(parts, local.values.contiguous())
        return torch.cat(parts).topk(n_keep * self.world_size, sorted=False).values.min()

    def min(self, value: Tensor) -> Tensor:
        """The minimum of a scalar over the ranks."""
        out = value.detach().clone()
        tdist.all_reduce(out, op=tdist.ReduceOp.MIN)
        return out

    def control(self, request: str | None) -> str | None:
        """The strongest control request of any rank (stop > pause > none)."""
        if not self.active:
            return request
        code = torch.tensor([CONTROL_CODES[request]], device=self.device)
        tdist.all_reduce(code, op=tdist.ReduceOp.MAX)
        return {v: k for k, v in CONTROL_CODES.items()}[int(code)]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if not self.active:
            return
        for t in [*module.parameters(), *module.buffers()]:
            tdist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    # ---- metrics --------------------------------------------------------------------------
    def mean_terms(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """Batch-mean scalars (loss terms) averaged over the ranks: their global value."""
        if not self.active or not terms:
            return terms
        names = list(terms)
        packed = torch.stack([terms[n].detach().float().reshape(()) for n in names])
        tdist.all_reduce(packed)
        packed /= self.world_size
        return dict(zip(names, packed, strict=True))

    def reconstruction_metrics(self, target: Tensor, x_hat: Tensor, z: Tensor) -> dict[str, Tensor]:
        """SPEC §3 metrics of the global batch, from sums reduced across the ranks (in
        float64: the sums of many ranks' rows)."""
        if not self.active:
            return reconstruction_metrics(target, x_hat, z)
        target = target.double()
        n, d = target.shape
        # x̄ is the global per-dimension mean, so Σ‖x − x̄‖² adds up across the ranks
        sums = metric_sums(target, x_hat.double(), z, self.batch_mean(target))
        tdist.all_reduce(sums)
        return metrics_from_sums(sums, n * self.world_size, d)


SINGLE = Dist()


def setup(device: str) -> tuple[Dist, torch.device]:
    """Join torchrun's process group when started by torchrun (WORLD_SIZE > 1).

    Each rank trains on ``cuda:LOCAL_RANK`` with NCCL when ``device`` resolves to CUDA
    (``auto`` on a GPU machine, ``cuda``), else on the CPU with gloo. Outside torchrun this
    is the single-process device choice and :data:`SINGLE`.
    """
    if not in_torchrun():
        return SINGLE, pick_device(device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if uses_cuda(device):
        if not torch.cuda.is_available():
            raise ValueError("device: CUDA was asked for but is not available")
        dev = torch.device("cuda", local_rank)  # one GPU per process, whatever cuda:N said
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend, device_id=dev if backend == "nccl" else None)
    return Dist(rank, world, dev), dev


def shutdown() -> None:
    """Leave the process group (end of a torchrun'd command). After a normal end (no
    exception on its way out) every rank first waits for the others: a rank that tears
    its gloo pairs down while a peer still talks makes that peer's background thread
    abort the process ("terminate called without an active exception")."""
    if tdist.is_available() and tdist.is_initialized():
        if sys.exc_info()[0] is None:
            with contextlib.suppress(Exception):  # a peer that died must not hang us here
                if tdist.get_backend() == "gloo":
                    tdist.monitored_barrier(timeout=datetime.timedelta(seconds=30))
                else:
                    tdist.barrier()
        tdist.destroy_process_group()
