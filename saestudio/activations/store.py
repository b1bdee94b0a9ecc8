"""Read ``[N, d]`` activation arrays from .npy / .safetensors files or folders of shards.

Only the rows asked for are read: .npy rows with a plain file read at the row's offset
(the header is parsed by ``np.load(mmap_mode="r")``, but rows are not read through the
map, whose touched pages would stay in the process's resident memory and grow it to the
file's size), safetensors through a lazy slice. Nothing is unpickled:
``np.load(..., allow_pickle=False)`` and safetensors hold plain tensors only (erratum 7).
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

SUFFIXES = (".npy", ".safetensors")


class DataError(ValueError):
    """Activation data that cannot be used, with a message naming the field and file."""


class _Shard:
    def __init__(self, path: Path, field: str):
        self.path = path
        self.field = field
        if path.suffix == ".npy":
            try:
                self._np = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as e:
                raise DataError(f"{field}: {path} is not a plain numeric .npy array ({e})") from e
            shape = tuple(self._np.shape)
            if self._np.dtype.kind not in "fiu":
                raise DataError(f"{field}: {path} holds {self._np.dtype}, not numbers")
            # row-major files: rows are contiguous bytes at ``offset`` (read with a seek)
            self._offset = int(self._np.offset) if self._np.flags.c_contiguous else None
        else:
            self._np = None
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                if len(keys) != 1 and "activations" not in keys:
                    raise DataError(
                        f"{field}: {path} must hold one tensor (or one named 'activations'); "
                        f"found {keys}"
                    )
                self._key = "activations" if "activations" in keys else keys[0]
                shape = tuple(f.get_slice(self._key).get_shape())
        if len(shape) != 2:
            raise DataError(f"{field}: expected a [N, d] array, got shape {shape} in {path}")
        self.rows, self.width = int(shape[0]), int(shape[1])

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` as float32."""
        if self._np is not None:
            if self._offset is None:  # Fortran order: rows are strided, go through the map
                return torch.from_numpy(np.array(self._np[start:stop], dtype=np.float32))
            return torch.from_numpy(self._read_npy_rows(start, stop))
        with safe_open(str(self.path), framework="pt") as f:
            return f.get_slice(self._key)[start:stop].float()

    def _read_npy_rows(self, start: int, stop: int) -> np.ndarray:
        assert self._np is not None and self._offset is not None
        start, stop = max(0, start), min(stop, self.rows)
        n = max(0, stop - start)
        dtype = self._np.dtype
        with self.path.open("rb") as f:
            f.seek(self._offset + start * self.width * dtype.itemsize)
            arr = np.fromfile(f, dtype=dtype, count=n * self.width)
        if arr.size != n * self.width:
            raise DataError(f"{self.field}: {self.path} is truncated (rows {start}..{stop})")
        if arr.dtype != np.float32:  # also byte-swaps big-endian float32
            arr = arr.astype(np.float32)
        return arr.reshape(n, self.width)


def _shard_paths(path: Path, field: str) -> list[Path]:
    if not path.exists():
        raise DataError(f"{field}: no such file or folder: {path}")
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise DataError(f"{field}: {path} is not a .npy or .safetensors file")
        return [path]
    shards = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not shards:
        raise DataError(f"{field}: folder {path} holds no .npy or .safetensors shards")
    return shards


class ArrayDataset:
    """A read-only ``[N, d]`` view over one file or the sorted shards of a folder."""

    def __init__(self, path: str | Path, field: str = "activations"):
        self.path = Path(path)
        self.field = field
        self.shards = [_Shard(p, field) for p in _shard_paths(self.path, field)]
        widths = {s.width for s in self.shards}
        if len(widths) != 1:
            raise DataError(
                f"{field}: shards in {self.path} have different widths {sorted(widths)}"
            )
        self.width = widths.pop()
        self._starts = [0]
        for s in self.shards:
            self._starts.append(self._starts[-1] + s.rows)
        self.rows = self._starts[-1]
        if self.rows == 0:
            raise DataError(f"{field}: {self.path} holds no rows")

    def __len__(self) -> int:
        return self.rows

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` across shard boundaries, as a float32 ``[rows, d]`` tensor.

        Every read is checked for NaN/Inf, so no path (training batches, the held-out
        evaluation rows, normalisation statistics) can feed non-finite data on silently.
        """
        first = start
        parts = []
        i = bisect.bisect_right(self._starts, start) - 1
        while start < stop:
            shard_start = self._starts[i]
            end = min(stop, self._starts[i + 1])
            parts.append(self.shards[i].read(start - shard_start, end - shard_start))
            start = end
            i += 1
        if not parts:
            return torch.empty(0, self.width)
        rows = parts[0] if len(parts) == 1 else torch.cat(parts)
        # numpy, not torch: single-threaded, so the reader thread never fights the
        # training step for torch's intra-op threads on small CPUs
        arr = rows.numpy()
        if not np.isfinite(arr).all():
            bad = first + int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
            raise DataError(
                f"{self.field}: non-finite values (NaN/Inf) at {self.locate(bad)}; "
                "clean the data or drop those rows"
            )
        return rows

    def locate(self, row: int) -> str:
        """Human-readable place of a global row (file and row within it)."""
        i = bisect.bisect_right(self._starts, row) - 1
        return f"{self.shards[i].path} row {row - self._starts[i]}"
