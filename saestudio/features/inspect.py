"""The inspection pass: every SAE of a run over an activation dataset's rows, once.

Per batch of rows each SAE encodes its hook's rows and hands the firing entries to the
streaming accumulators of :mod:`.stats` (nothing ``[rows, d_sae]`` is kept); a TopK
SAE also spools each row's k-th largest pre-activation to disk for the context pass. At
the end the examples (top-N and quantile-band samples) get their contexts
(:mod:`.examples`), and :mod:`.assemble` writes ``summary.json`` and ``latents.jsonl``.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saestudio.activations.manifest import open_activation_dataset, open_hook
from saestudio.activations.store import ArrayDataset
from saestudio.features.assemble import write_inspection
from saestudio.features.examples import KthFile, TokenTable, uses_topk
from saestudio.features.records import SUMMARY, InspectSummary, write_atomic_text
from saestudio.features.saes import LoadedSAE, load_for_inspection
from saestudio.features.target import Target
from saestudio.sae.base import SparseAutoencoder

log = logging.getLogger(__name__)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=\-]{0,199}")


class InspectionStopped(RuntimeError):
    """``should_stop()`` returned True; nothing was written."""


def _range(rows: tuple[int, int] | None, total: int) -> tuple[int, int]:
    start, stop = rows if rows is not None else (0, total)
    if not (0 <= start < stop <= total):
        raise ValueError(
            f"rows: [{start}, {stop}) is not a non-empty range inside the dataset's {total} rows"
        )
    return int(start), int(stop)


def _check_params(**p: int) -> None:
    for name, value in p.items():
        if value < (0 if name == "window" else 1):
            raise ValueError(
                f"{name}: must be at least {0 if name == 'window' else 1}, got {value}"
            )


def _resolve_hook(name: str, loaded: LoadedSAE, hook: str | None, hooks: Mapping[str, Any]) -> str:
    chosen = hook or loaded.hook
    if chosen is None:
        if len(hooks) != 1:
            raise ValueError(
                f"hook: SAE {name!r} names no hook and the dataset holds {', '.join(hooks)}; "
                "give one"
            )
        chosen = next(iter(hooks))
    if chosen not in hooks:
        raise ValueError(
            f"hook: the dataset has no hook {chosen!r} (SAE {name!r}); it holds {', '.join(hooks)}"
        )
    d = hooks[chosen].d
    if loaded.sae.d_in != d:
        raise ValueError(
            f"hook: SAE {name!r} takes d_in={loaded.sae.d_in} but the dataset's {chosen!r} rows "
            f"are {d} wide"
        )
    return chosen


def _load(value: str | Path | SparseAutoencoder) -> LoadedSAE:
    if isinstance(value, SparseAutoencoder):
        return LoadedSAE(value.eval(), "<module>", None, "none")
    return load_for_inspection(value)


def inspect_saes(
    saes: Mapping[str, str | Path | SparseAutoencoder],
    activations: str | Path,
    out: str | Path,
    *,
    hook: str | None = None,
    rows: tuple[int, int] | None = None,
    top_n: int = 20,
    window: int = 8,
    bands: int = 5,
    per_band: int = 5,
    unembed: Tensor | None = None,
    tokenizer: Any = None,
    batch_size: int = 4096,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, InspectSummary]:
    """Inspect several SAEs in one pass; SAE ``name`` is written to ``out/<name>/``.

    See :mod:`saestudio.features` for the arguments and the output format.
    """
    for name in saes:
        if not _NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"saes: {name!r} cannot name a folder (letters, digits, _ . = -)")
    return _inspect(
        {name: (value, Path(out) / name) for name, value in saes.items()},
        activations,
        hook=hook, rows=rows, top_n=top_n, window=window, bands=bands, per_band=per_band,
        unembed=unembed, tokenizer=tokenizer, batch_size=batch_size, progress=progress,
        should_stop=should_stop, device=device,
    )  # fmt: skip


def inspect_sae(
    sae: str | Path | SparseAutoencoder,
    activations: str | Path,
    out: str | Path,
    **kwargs: Any,
) -> InspectSummary:
    """Inspect one SAE, writing ``out/summary.json`` and ``out/latents.jsonl`` (same
    keyword arguments as :func:`inspect_saes`)."""
    return _inspect({"sae": (sae, Path(out))}, activations, **kwargs)["sae"]


def _inspect(
    targets: Mapping[str, tuple[str | Path | SparseAutoencoder, Path]],
    activations: str | Path,
    *,
    hook: str | None = None,
    rows: tuple[int, int] | None = None,
    top_n: int = 20,
    window: int = 8,
    bands: int = 5,
    per_band: int = 5,
    unembed: Tensor | None = None,
    tokenizer: Any = None,
    batch_size: int = 4096,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, InspectSummary]:
    t0 = time.perf_counter()
    _check_params(top_n=top_n, window=window, bands=bands, per_band=per_band, batch_size=batch_size)
    dev = torch.device(device)
    manifest = open_activation_dataset(activations)
    start, stop = _range(rows, manifest.rows)
    data: dict[str, ArrayDataset] = {}
    p = {"device": dev, "top_n": top_n, "bands": bands, "per_band": per_band}
    state: list[Target] = []
    for name, (value, folder) in targets.items():
        loaded = _load(value)
        loaded.sae.to(dev)
        h = _resolve_hook(name, loaded, hook, manifest.hooks)
        if h not in data:
            data[h] = open_hook(activations, h)
        state.append(Target(name, loaded, h, folder, p))
    table = TokenTable(activations, manifest)
    with tempfile.TemporaryDirectory(prefix="saestudio-inspect-") as tmp:
        for i, t in enumerate(state):
            if uses_topk(t.loaded.sae):
                t.kth = KthFile(Path(tmp) / f"kth_{i}.f32", start)
        for s in range(start, stop, batch_size):
            if should_stop is not None and should_stop():
                raise InspectionStopped(f"inspection stopped at row {s}")
            e = min(stop, s + batch_size)
            xs = {h: ds.read(s, e).to(dev) for h, ds in data.items()}
            for t in state:
                t.consume(xs[t.hook], s)
            if progress is not None:
                progress(e - start, stop - start)
        for t in state:
            t.release()
            if t.kth is not None:
                t.kth.close()
        written = {}
        for t in state:
            written[t.name] = write_inspection(
                t, data[t.hook], table, manifest, activations, (start, stop),
                window=window, bands=bands, per_band=per_band, unembed=unembed,
                tokenizer=tokenizer, device=dev,
            )  # fmt: skip
    seconds = round(time.perf_counter() - t0, 3)
    done = {}
    for t in state:  # summary.json last: its presence marks a finished inspection
        done[t.name] = written[t.name].model_copy(update={"seconds": seconds})
        write_atomic_text(t.out / SUMMARY, done[t.name].model_dump_json(indent=2) + "\n")
    return done
