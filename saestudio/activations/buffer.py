"""A shuffled, seekable, memory-bounded stream of training batches.

Rows are read in contiguous blocks (cheap on disk); each epoch permutes the blocks,
groups them into windows of ``buffer_rows`` rows and permutes the rows inside each
window. The order is a pure function of (seed, epoch, window), so a stream can be
re-opened at any position — which is what makes resume exact — and memory never
exceeds about two windows (the one being consumed and the one being prefetched).

Hand-written rather than a ``torch.utils.data.DataLoader``: a DataLoader indexes rows
one by one (slow for [N, d] arrays) and cannot seek to a batch position.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from saestudio.activations.store import ArrayDataset


class Batch(NamedTuple):
    x: torch.Tensor  # [batch, d_in]
    target: torch.Tensor | None  # [batch, d_out] for transcoders


class RowStream:
    """Batches over rows ``[0, n_rows)`` of several row-aligned datasets at once.

    Each batch is a tuple with one ``[batch, d_i]`` tensor per dataset, the same rows of
    each (several hooks of one extraction, or transcoder inputs and targets).
    """

    def __init__(
        self,
        datasets: Sequence[ArrayDataset],
        n_rows: int,
        batch_size: int,
        seed: int,
        block_rows: int = 1024,
        buffer_rows: int = 65536,
    ):
        self.datasets = list(datasets)
        self.n_rows = n_rows
        self.batch_size = batch_size
        self.seed = seed
        self.block_rows = block_rows
        self.blocks_per_window = max(1, buffer_rows // block_rows)
        self.n_blocks = -(-n_rows // block_rows)

    # ---- the deterministic order ---------------------------------------------------------
    def _block_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)

    def _block_size(self, b: int) -> int:
        return min(self.block_rows, self.n_rows - b * self.block_rows)

    def _windows(self, epoch: int) -> list[np.ndarray]:
        order = self._block_order(epoch)
        return [
            order[i : i + self.blocks_per_window]
            for i in range(0, self.n_blocks, self.blocks_per_window)
        ]

    def _read_block(self, data: ArrayDataset, b: int) -> torch.Tensor:
        """One block; ``ArrayDataset.read`` raises DataError naming the row on NaN/Inf."""
        start = b * self.block_rows
        return data.read(start, start + self._block_size(b))

    def _load_window(self, epoch: int, w: int, blocks: np.ndarray) -> tuple[torch.Tensor, ...]:
        rows = sum(self._block_size(int(b)) for b in blocks)
        perm = torch.from_numpy(np.random.default_rng([self.seed, epoch, w]).permutation(rows))
        return tuple(
            torch.cat([self._read_block(d, int(b)) for b in blocks])[perm] for d in self.datasets
        )

    def _chunks(self, position: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """Shuffled rows from global stream row ``position`` on, one window at a time."""
        epoch, offset = divmod(position, self.n_rows)
        while True:
            for w, blocks in enumerate(self._windows(epoch)):
                size = sum(self._block_size(int(b)) for b in blocks)
                if offset >= size:
                    offset -= size
                    continue
                window = self._load_window(epoch, w, blocks)
                yield tuple(t[offset:] for t in window)
                offset = 0
            epoch += 1

    def _batches(self, start_batch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        parts: list[tuple[torch.Tensor, ...]] = []
        have = 0
        for chunk in self._chunks(start_batch * self.batch_size):
            while len(chunk[0]):
                take = min(self.batch_size - have, len(chunk[0]))
                parts.append(tuple(t[:take] for t in chunk))
                chunk = tuple(t[take:] for t in chunk)
                have += take
                if have == self.batch_size:
                    yield tuple(torch.cat(col) for col in zip(*parts, strict=True))
                    parts, have = [], 0

    # ---- prefetching iterator ----------------------------------------------------------------
    def iterate(self, start_batch: int = 0, prefetch: int = 2) -> PrefetchIterator:
        """Batches from ``start_batch`` on, read by a background thread."""
        return PrefetchIterator(self._batches(start_batch), prefetch)


class ShuffledStream(RowStream):
    """A :class:`RowStream` of ``inputs`` (and paired ``targets``) yielding :class:`Batch`."""

    def __init__(
        self,
        inputs: ArrayDataset,
        targets: ArrayDataset | None,
        n_rows: int,
        batch_size: int,
        seed: int,
        block_rows: int = 1024,
        buffer_rows: int = 65536,
    ):
        datasets = [inputs] if targets is None else [inputs, targets]
        super().__init__(datasets, n_rows, batch_size, seed, block_rows, buffer_rows)
        self.inputs, self.targets = inputs, targets

    def _batches(self, start_batch: int) -> Iterator[Batch]:  # type: ignore[override]
        for cols in super()._batches(start_batch):
            yield Batch(cols[0], cols[1] if len(cols) > 1 else None)


class PrefetchIterator:
    """Runs a batch generator in a daemon thread so disk reads overlap training steps."""

    _DONE = object()

    def __init__(self, source: Iterator[Any], prefetch: int):
        self._q: queue.Queue[object] = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self._thread.start()

    def _run(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._q.put(e)
        self._q.put(self._DONE)

    def __iter__(self) -> PrefetchIterator:
        return self

    def __next__(self) -> Any:
        item = self._q.get()
        if item is self._DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)
