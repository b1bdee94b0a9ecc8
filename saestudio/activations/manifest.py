"""The on-disk **activation dataset** written by ``saestudio extract``, and its readers.

Layout (every hook shares the shard boundaries, so row i of every file is one token)::

    OUT/manifest.json                 this module's :class:`Manifest`
    OUT/<hook folder>/shard_00000.npy [rows, d]  (.safetensors, tensor "activations", for bf16)
    OUT/tokens/shard_00000.npy        int32 [rows]     token id of each stored row
    OUT/positions/shard_00000.npy     int32 [rows, 2]  (context index, position in context)
    OUT/.lock                         empty; locked while an extraction writes the folder

A hook's folder is its name with ``/`` → ``_``; names that could leave ``OUT`` or clash
with ``tokens``/``positions`` are refused (erratum 8: every user-given name resolves
inside its root). An extraction that has not finished (``complete: false``) is never
read silently: :func:`open_hook` refuses it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from saestudio.activations.config import StorageDtype
from saestudio.activations.hookpoints import HookError
from saestudio.activations.store import ArrayDataset, DataError

FORMAT: Literal["saestudio.activations/1"] = "saestudio.activations/1"
MANIFEST = "manifest.json"
TOKENS, POSITIONS = "tokens", "positions"
LOCK = ".lock"  # held by the extraction writing the folder
_RESERVED = {TOKENS, POSITIONS, MANIFEST}
_SAFE = re.compile(r"[A-Za-z0-9_.\-]+")


class HookInfo(BaseModel):
    module: str
    """Path in ``model.named_modules()``."""
    capture: Literal["input", "output"]
    """Whether the module's input or output is stored."""
    d: int
    """Width of each stored row."""


class ShardInfo(BaseModel):
    name: str
    """File stem shared by every hook folder, ``tokens`` and ``positions``."""
    rows: int
    """Rows stored in this shard (fewer than contexts × length with special tokens excluded)."""
    contexts: tuple[int, int]
    """Global context indices ``[start, stop)`` held by this shard."""
    token_sha256: str
    """SHA-256 of the int32 token ids of all the shard's contexts (special tokens included):
    a resume checks that the text source still yields the same tokens."""


class HookStats(BaseModel):
    mean_norm: float
    """Mean L2 norm of the stored rows (as stored, i.e. after the cast to storage_dtype)."""
    mean_squared_norm: float
    """Mean squared L2 norm: what unit-mean-squared-norm normalisation divides by."""
    max_abs: float
    """Largest absolute value of any element."""


class StatSums(BaseModel):
    """float64 running sums behind :class:`HookStats`, kept so a resume stays exact."""

    rows: int = 0
    norm: float = 0.0
    squared_norm: float = 0.0
    max_abs: float = 0.0


class Manifest(BaseModel):
    """``manifest.json`` of an activation dataset."""

    format: Literal["saestudio.activations/1"] = FORMAT
    complete: bool
    """False while the extraction runs or after it was interrupted."""
    model: str
    """Hub name, or the model folder's absolute path."""
    model_dtype: StorageDtype
    """dtype the model ran in."""
    hooks: dict[str, HookInfo]
    """Hook name (as the user wrote it) → module, side and width."""
    storage_dtype: StorageDtype
    context_length: int
    prepend_bos: bool
    """Whether every context starts with BOS (CLS for BERT-style models)."""
    contexts: int
    """Contexts stored so far."""
    target_contexts: int
    """Contexts asked for (``max_tokens // context_length``); a short source stops earlier."""
    max_tokens: int
    rows: int
    """Rows stored so far (tokens, minus the excluded special tokens)."""
    dataset: dict[str, Any]
    """The text source: ``name`` (local paths absolute), ``split``, ``text_column``, ``config``."""
    exclude_special_tokens: bool
    special_token_ids: list[int]
    """BOS/CLS/SEP/EOS/pad ids of the tokenizer (the rows dropped when excluding them)."""
    shard_contexts: int
    """Contexts per shard: shard k holds contexts ``[k·shard_contexts, (k+1)·shard_contexts)``."""
    batch_size: int
    """Contexts per forward pass (batches never cross a shard boundary)."""
    shards: list[ShardInfo]
    stats: dict[str, HookStats]
    sums: dict[str, StatSums]
    created: str
    """ISO time the extraction was first started."""
    saestudio_version: str

    def shard_file(self, name: str) -> str:
        """File name of shard ``name`` in a hook folder."""
        return name + (".safetensors" if self.storage_dtype == "bfloat16" else ".npy")


def hook_folder(name: str) -> str:
    """The folder holding hook ``name``'s shards: the name with ``/`` → ``_``.

    Refuses anything that could resolve outside the dataset folder or onto the
    ``tokens``/``positions`` folders (``..``, empty names, unusual characters).
    """
    folder = name.replace("/", "_").replace("\\", "_")
    if (
        not _SAFE.fullmatch(folder)
        or ".." in folder
        or folder.startswith(".")
        or folder in _RESERVED
    ):
        raise HookError(
            f"hooks: {name!r} cannot name a folder inside the dataset (no '..', no leading "
            f"'.', not {sorted(_RESERVED)}; letters, digits, '_', '-', '.' and '/' only)"
        )
    return folder


def manifest_path(out: str | Path) -> Path:
    return Path(out) / MANIFEST


def open_activation_dataset(path: str | Path) -> Manifest:
    """The manifest of the activation dataset at ``path`` (complete or not)."""
    mpath = manifest_path(path)
    if not mpath.is_file():
        raise DataError(
            f"activations: {path} is not an activation dataset (no {MANIFEST}); "
            "make one with `saestudio extract`"
        )
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"activations: cannot read {mpath}: {e}") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else None
        raise DataError(f"activations: {mpath} has format {found!r}, expected {FORMAT!r}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:3]
        )
        raise DataError(f"activations: {mpath} is not a valid manifest ({problems})") from e


def write_manifest(out: Path, manifest: Manifest) -> None:
    """Atomically replace ``OUT/manifest.json`` (temp file + rename)."""
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """One extraction per folder at a time: a second one (another process, or a job
    retried while the first still runs) is refused. The OS drops the lock when its
    process dies, so a killed extraction never blocks its own resume."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        yield
        return
    with (out / LOCK).open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"--out: another extraction is writing to {out}") from None
        yield


def _require_complete(path: str | Path, m: Manifest) -> None:
    if not m.complete:
        raise DataError(
            f"activations: {path} is an incomplete extraction ({m.contexts} of "
            f"{m.target_contexts} contexts); re-run `saestudio extract` with the same "
            "arguments to finish it"
        )


def open_hook(path: str | Path, hook: str) -> ArrayDataset:
    """Hook ``hook``'s ``[rows, d]`` activations of a complete dataset, read lazily."""
    m = open_activation_dataset(path)
    _require_complete(path, m)
    if hook not in m.hooks:
        raise DataError(f"activations: {path} has no hook {hook!r}; it holds: {', '.join(m.hooks)}")
    return _checked(Path(path) / hook_folder(hook), m, f"activations[{hook}]")


def open_tokens(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(token ids ``int32 [rows]``, positions ``int32 [rows, 2]``) of a complete dataset.

    Row i is the token whose activations are row i of every hook: what lets a feature's
    top activations be shown in context. Loaded whole (12 bytes per row).
    """
    m = open_activation_dataset(path)
    _require_complete(path, m)
    out = []
    for sub, shape in ((TOKENS, ()), (POSITIONS, (2,))):
        parts = []
        for s in m.shards:
            f = Path(path) / sub / (s.name + ".npy")
            if not f.is_file():
                raise DataError(f"activations: {f} is missing; re-run the extraction")
            arr = np.load(f, allow_pickle=False)
            if arr.shape != (s.rows, *shape):
                raise DataError(f"activations: {f} has shape {arr.shape}, not {(s.rows, *shape)}")
            parts.append(arr)
        out.append(np.concatenate(parts) if parts else np.zeros((0, *shape), np.int32))
    return out[0], out[1]


def _checked(folder: Path, m: Manifest, field: str) -> ArrayDataset:
    """An ArrayDataset over ``folder`` whose shards are exactly the manifest's."""
    ds = ArrayDataset(folder, field)
    want = [(m.shard_file(s.name), s.rows) for s in m.shards]
    have = [(s.path.name, s.rows) for s in ds.shards]
    if have != want:
        raise DataError(
            f"{field}: the shards in {folder} do not match {MANIFEST} "
            f"({len(have)} files, {len(want)} listed); re-run the extraction into a new folder"
        )
    return ds
