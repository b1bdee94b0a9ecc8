"""Where training rows come from: files, activation datasets, or a model on the fly.

A source exposes named, row-aligned streams (``"x"``/``"y"`` for plain files, hook names
for activation datasets and on-the-fly models), a held-out evaluation slice and a sample
for normalisation statistics. Every SAE of a job reads its streams from the same
batches, so one read (or one forward pass) feeds them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch

from saestudio.activations.buffer import RowStream
from saestudio.activations.store import ArrayDataset, DataError
from saestudio.training.config import TrainConfig
from saestudio.training.distributed import SINGLE, Dist

NORM_SAMPLE_BLOCKS = 16


class TrainingSource(Protocol):
    widths: dict[str, int]
    n_eval: int

    def batches(self, start_batch: int) -> Iterator[dict[str, torch.Tensor]]: ...
    def eval_rows(self) -> dict[str, torch.Tensor]: ...
    def sample_rows(self, name: str) -> torch.Tensor: ...
    def close(self) -> None: ...


def stream_names(cfg: TrainConfig) -> tuple[str, str | None]:
    """(input stream, target stream) of a single-SAE config."""
    if cfg.hook and (cfg.activations is None or is_activation_dataset(cfg.activations)):
        return cfg.hook[0], cfg.target_hook
    return "x", "y" if cfg.targets else None


def is_activation_dataset(path: str) -> bool:
    return (Path(path) / "manifest.json").is_file()


class ArraySource:
    """Rows from files or an activation dataset, streamed shuffled from disk."""

    def __init__(self, job: TrainConfig, names: list[str]):
        assert job.activations is not None
        self.job = job
        self.data: dict[str, ArrayDataset] = {}
        if is_activation_dataset(job.activations):
            from saestudio.activations.manifest import open_hook

            for name in names:
                self.data[name] = open_hook(job.activations, name)
        else:
            self.data["x"] = ArrayDataset(job.activations, "activations")
            if job.targets:
                self.data["y"] = ArrayDataset(job.targets, "targets")
        rows = {len(d) for d in self.data.values()}
        if len(rows) != 1:
            raise DataError(
                "targets: row counts differ between "
                + ", ".join(f"{k} ({len(d)})" for k, d in self.data.items())
                + "; pairs must line up row by row"
            )
        total = rows.pop()
        self.n_eval = min(job.eval_tokens, total // 10)
        self.n_train = total - self.n_eval
        if self.n_train < 1:
            raise DataError(f"activations: {job.activations} has too few rows ({total})")
        self.widths = {k: d.width for k, d in self.data.items()}
        self._names = list(self.data)
        self._iters: list = []

    def batches(self, start_batch: int) -> Iterator[dict[str, torch.Tensor]]:
        job = self.job
        stream = RowStream(
            list(self.data.values()),
            self.n_train,
            job.batch_size,
            job.seed,
            job.shuffle_block_rows,
            job.shuffle_buffer_rows,
        )
        it = stream.iterate(start_batch=start_batch)
        self._iters.append(it)
        for cols in it:
            yield dict(zip(self._names, cols, strict=True))

    def eval_rows(self) -> dict[str, torch.Tensor]:
        return {k: d.read(self.n_train, self.n_train + self.n_eval) for k, d in self.data.items()}

    def sample_rows(self, name: str) -> torch.Tensor:
        """Evenly spaced blocks of training rows: a deterministic sample for statistics."""
        block = min(1024, self.n_train)
        starts = torch.linspace(0, self.n_train - block, NORM_SAMPLE_BLOCKS).long().unique()
        return torch.cat([self.data[name].read(int(s), int(s) + block) for s in starts])

    def close(self) -> None:
        for it in self._iters:
            it.close()


def open_source(
    job: TrainConfig, names: list[str], device: torch.device | None = None, dist: Dist = SINGLE
) -> TrainingSource:
    """The job's rows. Under torchrun every rank opens the same source and reads the same
    global batches; the trainer keeps each rank's shard (``Dist.shard``); on the fly, the
    ranks split each window's model work (``dist``). ``device``: where an on-the-fly model
    runs (this rank's GPU)."""
    if job.activations is not None:
        return ArraySource(job, names)
    from saestudio.training.onthefly import OnTheFlySource

    return OnTheFlySource(job, names, device, dist)
