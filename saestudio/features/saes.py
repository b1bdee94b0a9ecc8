"""Find and load the SAEs to inspect: a SAELens folder (ours or sae-lens's), a checkpoint,
or a run folder (one SAE, or one per hook / sweep value in labelled subfolders)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.saelens_load import load_saelens, read_saelens_cfg

CFG = "cfg.json"


class LoadedSAE(NamedTuple):
    sae: SparseAutoencoder
    """In eval mode, taking raw activations (checkpoint scales folded in)."""
    source: str
    """Where it came from (a folder path, or ``"<module>"``)."""
    hook: str | None
    """The hook it reads, from its ``cfg.json`` metadata (``hook_name``), if it names one."""
    normalize: str
    """Run-time ``normalize_activations`` (only ``constant_norm_rescale`` acts)."""


def _is_single(p: Path) -> bool:
    return (p / CFG).is_file() or (p / "state.json").is_file() or (p / "checkpoints").is_dir()


def run_saes(path: str | Path) -> dict[str, Path]:
    """The SAE folders of ``path`` by name: ``{"sae": path}`` for a SAELens folder,
    checkpoint or one-SAE run; the labelled subfolders of a many-SAE run (hooks, sweeps)."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"SAE: no such folder: {p}")
    if _is_single(p):
        return {"sae": p}
    subs = {d.name: d for d in sorted(p.iterdir()) if d.is_dir() and _is_single(d)}
    if not subs:
        raise FileNotFoundError(
            f"SAE: {p} holds no SAE (no {CFG}, checkpoint, or run subfolders with one)"
        )
    return subs


def load_for_inspection(path: str | Path) -> LoadedSAE:
    """One SAE from a SAELens folder or a checkpoint / run folder.

    A checkpoint holds the SAE in normalised space; it is exported (scales folded in) to a
    temporary SAELens folder first, exactly as ``saestudio export`` would.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"SAE: no such folder: {p}")
    if (p / CFG).is_file():
        return _from_saelens(p, str(p))
    from saestudio.training.export import export_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        out = export_checkpoint(p, Path(tmp) / "sae")
        return _from_saelens(out, str(p))


def _from_saelens(folder: Path, source: str) -> LoadedSAE:
    cfg: dict[str, Any] = read_saelens_cfg(folder)
    meta = cfg.get("metadata") or {}
    return LoadedSAE(
        load_saelens(folder).float().eval(),
        source,
        meta.get("hook_name") or cfg.get("hook_name"),
        cfg.get("normalize_activations") or "none",
    )
