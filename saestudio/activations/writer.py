"""The extraction's writer thread: shards to disk while the next forward passes run.

The forward loop hands over each batch's rows (already on the CPU, in the storage dtype)
and marks shard ends; this thread accumulates a shard, writes every file of it (temp
name, then an atomic rename), adds the shard's statistics to the running float64 sums
and only then rewrites ``manifest.json``. A run killed at any moment therefore leaves a
manifest that lists only shards whose files are all complete; files of a half-written
shard are overwritten, byte for byte the same, when the extraction resumes.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from saestudio.activations.manifest import (
    POSITIONS,
    TOKENS,
    HookStats,
    Manifest,
    ShardInfo,
    StatSums,
    write_manifest,
)
from saestudio.activations.store import DataError

log = logging.getLogger(__name__)


@dataclass
class _Rows:
    hooks: dict[str, torch.Tensor]  # name → [n, d] CPU tensor in the storage dtype
    tokens: np.ndarray  # int32 [n]
    positions: np.ndarray  # int32 [n, 2]
    ready: Any  # a CUDA event the asynchronous copies into ``hooks`` complete at, or None


@dataclass
class _EndShard:
    stop: int  # global context index the shard ends at (exclusive)
    token_sha256: str  # of the int32 ids of all the shard's contexts


_FINISH, _ABORT = object(), object()


class ShardWriter:
    """Owns ``manifest`` from construction on; the caller only reads the returned copy."""

    def __init__(
        self,
        out: Path,
        manifest: Manifest,
        folders: dict[str, str],
        on_shard: Callable[[Manifest], None] | None = None,
        max_pending: int = 4,
    ):
        self.out, self.manifest, self.folders, self.on_shard = out, manifest, folders, on_shard
        self._q: queue.Queue[object] = queue.Queue(maxsize=max_pending)  # bounds memory
        self._error: BaseException | None = None
        self._pending: list[_Rows] = []
        for sub in [*folders.values(), TOKENS, POSITIONS]:
            (out / sub).mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(
            max_workers=min(4, len(folders)), thread_name_prefix="shard"
        )
        self._thread = threading.Thread(target=self._loop, name="shard-writer", daemon=True)
        self._thread.start()

    # ---- called from the forward loop ---------------------------------------------------
    def put_rows(
        self,
        hooks: dict[str, torch.Tensor],
        tokens: np.ndarray,
        positions: np.ndarray,
        ready: Any = None,
    ) -> None:
        self._put(_Rows(hooks, tokens, positions, ready))

    def end_shard(self, stop: int, token_sha256: str) -> None:
        self._put(_EndShard(stop, token_sha256))

    def finish(self) -> Manifest:
        """Wait for every shard, mark the dataset complete; the final manifest."""
        self._put(_FINISH)
        self._thread.join()
        self._raise()
        return self.manifest

    def abort(self) -> Manifest:
        """Stop after the file being written; the partial shard is dropped."""
        self._put(_ABORT, check=False)
        self._thread.join()
        return self.manifest

    def _put(self, item: object, check: bool = True) -> None:
        while True:
            if check:
                self._raise()
            if not self._thread.is_alive():
                return
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    # ---- the thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # handed to the forward loop, raised there
            self._error = e
        finally:
            self._pool.shutdown(wait=True)

    def _serve(self) -> None:
        while True:
            item = self._q.get()
            if item is _ABORT:
                return
            if item is _FINISH:
                self.manifest = self.manifest.model_copy(update={"complete": True})
                write_manifest(self.out, self.manifest)
                return
            if isinstance(item, _Rows):
                if item.ready is not None:
                    item.ready.synchronize()  # this thread waits, not the forward loop
                self._pending.append(item)
            elif isinstance(item, _EndShard):
                self._write_shard(item)

    def _write_shard(self, end: _EndShard) -> None:
        m = self.manifest
        index = len(m.shards)
        name = f"shard_{index:05d}"
        start = m.shards[-1].contexts[1] if m.shards else 0
        pending, self._pending = self._pending, []
        tokens = _cat_np([p.tokens for p in pending], (0,))  # small: int32 per row
        positions = _cat_np([p.positions for p in pending], (0, 2))
        sums = dict(m.sums)

        def store(hook: str) -> StatSums:
            parts = [p.hooks[hook] for p in pending]
            path = self.out / self.folders[hook] / m.shard_file(name)
            _save_rows(path, parts, m.hooks[hook].d, _dtype(m))
            return _sums(parts, hook, (start, end.stop))

        # one task per hook (numpy and file writes release the GIL): several hooks' shards
        # are summarised and written at once
        for hook, shard_sums in zip(self.folders, self._pool.map(store, self.folders), strict=True):
            sums[hook] = _add(sums.get(hook, StatSums()), shard_sums)
        _save_npy(self.out / TOKENS / f"{name}.npy", [tokens])
        _save_npy(self.out / POSITIONS / f"{name}.npy", [positions])
        shard = ShardInfo(
            name=name, rows=len(tokens), contexts=(start, end.stop), token_sha256=end.token_sha256
        )
        self.manifest = m.model_copy(
            update={
                "shards": [*m.shards, shard],
                "contexts": end.stop,
                "rows": m.rows + len(tokens),
                "sums": sums,
                "stats": {k: _stats(v) for k, v in sums.items()},
            }
        )
        write_manifest(self.out, self.manifest)
        log.debug("wrote %s (contexts %d–%d, %d rows)", name, start, end.stop, len(tokens))
        if self.on_shard is not None:
            self.on_shard(self.manifest)


def _dtype(m: Manifest) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
        m.storage_dtype
    ]


def _cat_np(parts: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(empty_shape, dtype=np.int32)


def _sums(parts: list[torch.Tensor], hook: str, contexts: tuple[int, int]) -> StatSums:
    """Norm sums of one shard's rows, as stored (after the storage-dtype cast).

    Each row's squared norm is a float32 dot product (exact to ~1e-7 relative); the sums
    over rows, where float32 would lose digits over millions of rows, are float64. numpy,
    single-threaded, so this thread takes no cores from the forward pass's torch threads.
    """
    total = StatSums()
    for part in parts:
        if len(part) == 0:
            continue
        x = part.numpy() if part.dtype == torch.float32 else part.float().numpy()  # [n, d]
        sq = np.einsum("ij,ij->i", x, x).astype(np.float64)  # [n] squared norms
        max_abs = float(max(x.max(), -x.min()))  # no |x| temporary
        if not (np.isfinite(sq).all() and math.isfinite(max_abs)):
            raise DataError(
                f"hooks: {hook}: non-finite activations in contexts {contexts[0]}–{contexts[1]} "
                "(the model overflowed in its dtype, or the values exceed the storage dtype); "
                "try --dtype float32 or bfloat16, or --model-dtype float32"
            )
        total = _add(
            total,
            StatSums(
                rows=len(x),
                norm=float(np.sqrt(sq).sum()),
                squared_norm=float(sq.sum()),
                max_abs=max_abs,
            ),
        )
    return total


def _add(a: StatSums, b: StatSums) -> StatSums:
    return StatSums(
        rows=a.rows + b.rows,
        norm=a.norm + b.norm,
        squared_norm=a.squared_norm + b.squared_norm,
        max_abs=max(a.max_abs, b.max_abs),
    )


def _stats(s: StatSums) -> HookStats:
    n = max(s.rows, 1)
    return HookStats(mean_norm=s.norm / n, mean_squared_norm=s.squared_norm / n, max_abs=s.max_abs)


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    """Write to ``path.tmp`` (a suffix no reader picks up), then rename: a reader, or a run
    killed at any moment, sees the whole file or none. No fsync: a killed process loses
    nothing written, and forcing every shard to the disk halves the write speed on some
    disks (network ones most); only an OS crash can lose recent shards."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_npy(path: Path, parts: list[np.ndarray]) -> None:
    """Parts concatenated along rows into one .npy file, without concatenating in memory."""
    rows = sum(len(p) for p in parts)
    shape = (rows, *parts[0].shape[1:])

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            header = {
                "descr": np.lib.format.dtype_to_descr(parts[0].dtype),
                "fortran_order": False,
                "shape": shape,
            }
            np.lib.format.write_array_header_1_0(f, header)
            for part in parts:
                f.write(np.ascontiguousarray(part).data)

    _replace(path, write)


def _save_rows(path: Path, parts: list[torch.Tensor], d: int, dtype: torch.dtype) -> None:
    if not parts:
        parts = [torch.zeros(0, d, dtype=dtype)]
    if dtype == torch.bfloat16:  # numpy has no bfloat16: one safetensors tensor
        rows = torch.cat(parts) if len(parts) > 1 else parts[0].contiguous()
        _replace(path, lambda tmp: save_file({"activations": rows}, str(tmp)))
    else:
        _save_npy(path, [p.numpy() for p in parts])
