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
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from saestudio.activations.store import ArrayDataset


class Batch(NamedTuple):
    x: torch.Tensor  # [batch, d_in]
    target: torch.Tensor | None  # [batch, d_out] for transcoders


class ShuffledStream:
    """Batches over rows ``[0, n_rows)`` of ``inputs`` (and the same rows of ``targets``)."""

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
        self.inputs, self.targets = inputs, targets
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

    def _load_window(self, epoch: int, w: int, blocks: np.ndarray) -> Batch:
        x = torch.cat([self._read_block(self.inputs, int(b)) for b in blocks])
        perm = torch.from_numpy(np.random.default_rng([self.seed, epoch, w]).permutation(len(x)))
        y = None
        if self.targets is not None:
            y = torch.cat([self._read_block(self.targets, int(b)) for b in blocks])[perm]
        return Batch(x[perm], y)

    def _chunks(self, position: int) -> Iterator[Batch]:
        """Shuffled rows from global stream row ``position`` on, one window at a time."""
        epoch, offset = divmod(position, self.n_rows)
        while True:
            for w, blocks in enumerate(self._windows(epoch)):
                size = sum(self._block_size(int(b)) for b in blocks)
                if offset >= size:
                    offset -= size
                    continue
                x, y = self._load_window(epoch, w, blocks)
                yield Batch(x[offset:], None if y is None else y[offset:])
                offset = 0
            epoch += 1

    def _batches(self, start_batch: int) -> Iterator[Batch]:
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        have = 0
        for x, y in self._chunks(start_batch * self.batch_size):
            while len(x):
                take = min(self.batch_size - have, len(x))
                xs.append(x[:take])
                if y is not None:
                    ys.append(y[:take])
                x = x[take:]
                y = None if y is None else y[take:]
                have += take
                if have == self.batch_size:
                    yield Batch(torch.cat(xs), torch.cat(ys) if ys else None)
                    xs, ys, have = [], [], 0

    # ---- prefetching iterator ----------------------------------------------------------------
    def iterate(self, start_batch: int = 0, prefetch: int = 2) -> PrefetchIterator:
        """Batches from ``start_batch`` on, read by a background thread."""
        return PrefetchIterator(self._batches(start_batch), prefetch)


class PrefetchIterator:
    """Runs a batch generator in a daemon thread so disk reads overlap training steps."""

    _DONE = object()

    def __init__(self, source: Iterator[Batch], prefetch: int):
        self._q: queue.Queue[object] = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self._thread.start()

    def _run(self, source: Iterator[Batch]) -> None:
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

    def __next__(self) -> Batch:
        item = self._q.get()
        if item is self._DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)
