"""``saestudio extract``: a model's activations at several hooks → an activation dataset.

One forward pass per batch feeds every hook, and stops after the last needed module
(:func:`hookpoints.capture`). Contexts are grouped into shards of ``shard_contexts``;
a batch never crosses a shard boundary, so what is computed for a shard does not depend
on where a run started. A writer thread stores each shard (temp file + rename) while the
next batches run, then updates ``manifest.json``; re-running the same command after an
interruption continues after the last stored shard, and the result is byte-identical to
an uninterrupted run. The on-disk layout and readers are in :mod:`.manifest`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from saestudio import __version__
from saestudio.activations.config import ExtractConfig
from saestudio.activations.hookpoints import HookPoint, capture, resolve_hook, run_captured
from saestudio.activations.manifest import (
    LOCK,
    HookInfo,
    Manifest,
    exclusive,
    hook_folder,
    manifest_path,
    open_activation_dataset,
    open_hook,
    open_tokens,
    write_manifest,
)
from saestudio.activations.models import DTYPES, load_model, max_positions, model_ref
from saestudio.activations.store import DataError
from saestudio.activations.text_data import (
    ContextReader,
    bos_token_id,
    iter_contexts,
    load_tokenizer,
    special_token_ids,
)
from saestudio.activations.writer import ShardWriter

__all__ = [
    "ExtractConfig",
    "Manifest",
    "extract",
    "load_model",
    "open_activation_dataset",
    "open_hook",
    "open_tokens",
]

log = logging.getLogger(__name__)

# must match between the first run and a resume, or the stored bytes would differ
RESUME_FIELDS = (
    "model", "model_dtype", "hooks", "storage_dtype", "context_length", "prepend_bos",
    "target_contexts", "max_tokens", "dataset", "exclude_special_tokens", "shard_contexts",
)  # fmt: skip


def _probe_dims(model: nn.Module, hooks: list[HookPoint], device: torch.device) -> dict[str, int]:
    """Each hook's width, from one two-token forward pass."""
    ids = torch.zeros(1, 2, dtype=torch.long, device=device)
    with capture(model, hooks, stop_early=True) as acts:
        run_captured(model, input_ids=ids)
    return {hp.name: int(acts[hp.name].shape[-1]) for hp in hooks}


# ---- the extraction ----------------------------------------------------------------------


def _new_manifest(
    cfg: ExtractConfig, model_ref: str, hooks: dict[str, HookInfo], specials: list[int]
) -> Manifest:
    return Manifest(
        complete=False,
        model=model_ref,
        model_dtype=cfg.model_dtype,
        hooks=hooks,
        storage_dtype=cfg.dtype,
        context_length=cfg.context_length,
        prepend_bos=cfg.prepend_bos,
        contexts=0,
        target_contexts=cfg.target_contexts,
        max_tokens=cfg.max_tokens,
        rows=0,
        dataset=cfg.source().describe(),
        exclude_special_tokens=cfg.exclude_special_tokens,
        special_token_ids=specials,
        shard_contexts=cfg.shard_contexts,
        batch_size=cfg.batch_size,
        shards=[],
        stats={},
        sums={},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        saestudio_version=__version__,
    )


def _resume_or_start(out: Path, fresh: Manifest) -> Manifest:
    """The manifest to continue from: the one on disk when its arguments match."""
    if not manifest_path(out).is_file():
        if any(p.name != LOCK for p in out.iterdir()):
            raise ValueError(
                f"--out: {out} exists and is not an activation dataset; choose a new folder"
            )
        return fresh
    old = open_activation_dataset(out)
    diff = [
        f"{k}: {getattr(old, k)!r} → {getattr(fresh, k)!r}"
        for k in RESUME_FIELDS
        if getattr(old, k) != getattr(fresh, k)
    ]
    if diff and not old.shards:  # nothing stored yet (e.g. a bad text column): start over
        log.info("%s: no shard stored yet; starting over with the new arguments", out)
        return fresh
    if diff:
        raise ValueError(
            f"--out: {out} holds an extraction made with other arguments ({'; '.join(diff)}); "
            "re-run with the same arguments to continue it, or choose another --out"
        )
    if old.complete:
        return old
    if old.batch_size != fresh.batch_size:
        log.warning(
            "batch size %d differs from the first run's %d: the remaining shards are computed "
            "with %d (equal within float tolerance, not bitwise)",
            fresh.batch_size, old.batch_size, fresh.batch_size,
        )  # fmt: skip
        old = old.model_copy(update={"batch_size": fresh.batch_size})
    if old.contexts:
        log.info("%s: resuming after context %d of %d", out, old.contexts, old.target_contexts)
    return old


def extract(
    cfg: ExtractConfig,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_shard: Callable[[Manifest], None] | None = None,
) -> Manifest:
    """Run the extraction described by ``cfg`` (continuing a previous one) → its manifest.

    ``should_stop`` is polled between batches (the partial shard is dropped; re-running
    continues); ``on_shard`` is called with the manifest after every stored shard.
    """
    out = Path(cfg.out)
    folders = {h: hook_folder(h) for h in cfg.hooks}
    if len(set(folders.values())) != len(folders):
        raise ValueError(f"--hooks: two hooks map to the same folder: {folders}")
    cfg.source().describe()  # a missing local file fails before the model loads
    model = load_model(cfg.model, cfg.model_dtype, cfg.device)
    device = next(model.parameters()).device
    limit = max_positions(model)
    if limit is not None and cfg.context_length > limit:
        raise ValueError(
            f"--context-length: {cfg.context_length} exceeds the model's {limit} positions"
        )
    tokenizer = load_tokenizer(cfg.model)
    hps = [resolve_hook(model, h) for h in cfg.hooks]
    dims = _probe_dims(model, hps, device)
    hooks = {hp.name: HookInfo(module=hp.module, capture=hp.capture, d=dims[hp.name]) for hp in hps}
    specials = special_token_ids(tokenizer)
    if cfg.prepend_bos and bos_token_id(tokenizer) is None:
        log.info("the tokenizer has no BOS/CLS token: contexts start with text")
    fresh = _new_manifest(cfg, model_ref(cfg.model), hooks, specials)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; name a folder")
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        manifest = _resume_or_start(out, fresh)
        if manifest.complete:
            log.info("%s is already complete (%d contexts)", out, manifest.contexts)
            return manifest
        write_manifest(out, manifest)
        writer = ShardWriter(out, manifest, folders, on_shard)
        try:
            _run(cfg, model, tokenizer, hps, manifest, writer, progress, should_stop)
        except _Stopped:
            return writer.abort()
        except BaseException:
            writer.abort()  # finish the file being written, drop the partial shard
            raise
        return writer.finish()


def _skip_stored(contexts: Iterator[list[int]], manifest: Manifest, dataset: str) -> None:
    """Consume the contexts already stored, checking each shard's tokens are unchanged."""
    for shard in manifest.shards:
        a, b = shard.contexts
        h = hashlib.sha256()
        for ctx in islice(contexts, b - a):
            h.update(np.asarray(ctx, dtype=np.int32).tobytes())
        if h.hexdigest() != shard.token_sha256:
            raise DataError(
                f"--dataset: {dataset} no longer yields the tokens stored in {shard.name} "
                "(the text or the tokenizer changed); extract into a new folder"
            )


def _run(
    cfg: ExtractConfig,
    model: nn.Module,
    tokenizer: Any,
    hps: list[HookPoint],
    manifest: Manifest,
    writer: ShardWriter,
    progress: bool,
    should_stop: Callable[[], bool] | None,
) -> None:
    """The forward loop: batches (never crossing a shard) → the writer thread."""
    T, S, target = cfg.context_length, manifest.shard_contexts, manifest.target_contexts
    device = next(model.parameters()).device
    n_vocab = int(model.get_input_embeddings().num_embeddings)  # type: ignore[operator]
    storage = DTYPES[cfg.dtype]
    special = torch.tensor(manifest.special_token_ids, dtype=torch.long)
    contexts = iter_contexts(cfg.source(), tokenizer, T, cfg.prepend_bos)
    _skip_stored(contexts, manifest, cfg.dataset)  # tokenized again (cheap), not run
    reader = ContextReader(contexts, T)  # tokenizes ahead while the model runs
    pos = last_end = manifest.contexts
    bar = tqdm(
        total=target * T, initial=pos * T, unit="tok", unit_scale=True, dynamic_ncols=True,
        disable=not progress, desc=f"extract {','.join(cfg.hooks)}",
    )  # fmt: skip
    shard_hash = hashlib.sha256()
    t0 = time.perf_counter()
    with reader, bar, torch.inference_mode(), capture(model, hps, stop_early=True) as acts:
        while pos < target:
            shard_stop = min((pos // S + 1) * S, target)
            want = min(cfg.batch_size, shard_stop - pos)
            ids = reader.take(want)  # [b, T]
            exhausted = len(ids) < want  # the text ran out
            if len(ids):
                shard_hash.update(ids.to(torch.int32).numpy().tobytes())
                _forward_and_hand_over(
                    cfg, model, hps, acts, ids, pos, special, storage, writer, n_vocab, device
                )
                pos += len(ids)
                bar.update(len(ids) * T)
            if pos > last_end and (pos == shard_stop or exhausted):
                writer.end_shard(pos, shard_hash.hexdigest())
                shard_hash, last_end = hashlib.sha256(), pos
            if exhausted:
                break
            if should_stop is not None and should_stop():
                raise _Stopped
    log.info("extracted %d contexts in %.1fs", pos - manifest.contexts, time.perf_counter() - t0)


def _forward_and_hand_over(
    cfg: ExtractConfig,
    model: nn.Module,
    hps: list[HookPoint],
    acts: dict[str, torch.Tensor],
    ids: torch.Tensor,
    pos: int,
    special: torch.Tensor,
    storage: torch.dtype,
    writer: ShardWriter,
    n_vocab: int,
    device: torch.device,
) -> None:
    """One forward pass; its rows (special tokens dropped on request) to the writer."""
    if int(ids.max()) >= n_vocab:
        raise DataError(
            f"--model: token id {int(ids.max())} is outside the model's vocabulary "
            f"({n_vocab}); the tokenizer does not match the model"
        )
    b, T = ids.shape
    cuda = device.type == "cuda"
    run_captured(model, input_ids=ids.to(device, non_blocking=cuda))
    flat = ids.flatten()
    keep = None
    if cfg.exclude_special_tokens:  # row indices from the CPU ids: no GPU sync to count them
        keep = (~torch.isin(flat, special)).nonzero().squeeze(1)
        keep_dev = keep.to(device, non_blocking=cuda)
    rows = {}
    for hp in hps:
        a = acts[hp.name].reshape(b * T, -1)  # [b·T, d]
        if keep is not None:
            a = a.index_select(0, keep_dev)
        a = a.to(storage)
        if cuda:  # asynchronous copy into pinned memory: the next forward is queued at once
            host = torch.empty(a.shape, dtype=storage, pin_memory=True)
            rows[hp.name] = host.copy_(a, non_blocking=True)
        else:
            rows[hp.name] = a.cpu()
    ready = None
    if cuda:  # the writer waits for this before it reads the rows
        ready = torch.cuda.Event()
        ready.record()
    ctx = torch.arange(pos, pos + b, dtype=torch.int32).repeat_interleave(T)
    at = torch.arange(T, dtype=torch.int32).repeat(b)
    positions = torch.stack([ctx, at], dim=1)  # [b·T, 2]: (context, position)
    tokens = flat.to(torch.int32)
    if keep is not None:
        tokens, positions = tokens[keep], positions[keep]
    writer.put_rows(rows, tokens.numpy(), positions.numpy(), ready)


class _Stopped(Exception):
    """``should_stop`` asked for a stop between batches."""
