"""Checkpoints: safetensors for tensors, JSON for everything else — never pickles (erratum 6).

Layout of ``OUT/checkpoints/step_00000100/``:

- ``sae.safetensors``        the SAE's parameters and buffers
- ``optimizer.safetensors``  Adam moments, flattened as ``state.<param>.<name>``
- ``trainer.safetensors``    dead-latent counters, firing counts, RNG states
- ``state.json``             step, data position, config, resolved hyperparameters,
                             normalisation scales, optimizer param groups, eval loss

``OUT/checkpoints/best.json`` names the checkpoint with the lowest held-out loss.
A checkpoint is written to a temporary folder and renamed, so a killed run never
leaves a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "state.json"
BEST_FILE = "best.json"


class Checkpoint(NamedTuple):
    path: Path
    sae: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


_STEP = re.compile(r"step_(\d+)")


def checkpoints(root: Path, *, clean: bool = False) -> dict[int, Path]:
    """The complete checkpoints in ``root`` (a run's ``checkpoints/`` folder), by step,
    oldest first: folders named ``step_<N>`` that hold ``state.json`` (written last, just
    before the atomic rename). Everything else named ``step_*`` — a ``.tmp`` left by a
    kill mid-write, a folder without ``state.json``, a name that is not a step — is
    ignored, and removed when ``clean`` (only the process that owns the run may: it is
    not writing one now).

    The one listing of a run's checkpoints: resume, pruning, the runner and the store
    all go through it."""
    if not root.is_dir():
        return {}
    found = {}
    for d in root.glob("step_*"):
        m = _STEP.fullmatch(d.name)
        if m is not None and d.is_dir() and not d.is_symlink() and (d / STATE_FILE).is_file():
            found[int(m.group(1))] = d
        elif clean:
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d, ignore_errors=True)
            else:
                d.unlink(missing_ok=True)
    return dict(sorted(found.items()))


def latest_common_step(roots: Iterable[Path], *, clean: bool = False) -> int | None:
    """The latest step at which every one of ``roots`` holds a complete checkpoint (a
    many-SAE job resumes all its SAEs from one step), or None."""
    common: set[int] | None = None
    for root in roots:
        steps = set(checkpoints(root, clean=clean))
        common = steps if common is None else common & steps
    return max(common) if common else None


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    root: Path,
    step: int,
    *,
    sae_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> Path:
    """Write a checkpoint for ``step`` atomically and return its folder."""
    final = step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in sae_state.items()}, tmp / "sae.safetensors"
    )
    opt_tensors, opt_meta = _flatten_optimizer(optimizer_state)
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / "trainer.safetensors"
    )
    (tmp / STATE_FILE).write_text(json.dumps({**state, "optimizer": opt_meta}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the latest checkpoint of a run folder / checkpoints folder."""
    p = Path(path)
    if (p / STATE_FILE).is_file():
        return p
    for root in (p / "checkpoints", p):
        found = list(checkpoints(root).values())
        if found:
            return found[-1]
    raise FileNotFoundError(f"resume: no checkpoint found in {p}")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint (or the latest in a run folder)."""
    d = resolve_checkpoint(path)
    state = json.loads((d / STATE_FILE).read_text())
    opt_meta = state.pop("optimizer")
    optimizer = _unflatten_optimizer(load_file(d / "optimizer.safetensors"), opt_meta)
    return Checkpoint(
        d, load_file(d / "sae.safetensors"), optimizer, load_file(d / "trainer.safetensors"), state
    )


def read_best(root: Path) -> dict[str, Any] | None:
    f = root / BEST_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def update_best(root: Path, step: int, eval_loss: float) -> bool:
    """Record ``step`` as best if its held-out loss beats the recorded one."""
    best = read_best(root)
    if best is not None and best["eval_loss"] <= eval_loss:
        return False
    tmp = root / (BEST_FILE + ".tmp")
    tmp.write_text(
        json.dumps({"step": step, "eval_loss": eval_loss, "path": step_dir(root, step).name})
    )
    os.replace(tmp, root / BEST_FILE)
    return True


def prune(root: Path, keep_last: int) -> list[Path]:
    """Delete all but the best checkpoint and the last ``keep_last`` (and any leftover
    ``.tmp`` or incomplete folder); returns the checkpoints removed."""
    best = read_best(root)
    keep_best = best["path"] if best else None
    ckpts = list(checkpoints(root, clean=True).values())
    removed = []
    for d in ckpts[:-keep_last] if keep_last else ckpts:
        if d.name != keep_best:
            shutil.rmtree(d)
            removed.append(d)
    return removed


def drop_after(root: Path, step: int) -> None:
    """Remove checkpoints newer than ``step`` (a resume from an older one supersedes them)
    and any leftover ``.tmp`` or incomplete folder; re-pick the best among the rest."""
    kept = {}
    for n, d in checkpoints(root, clean=True).items():
        if n > step:
            shutil.rmtree(d)
        else:
            kept[n] = d
    best = read_best(root)
    if best and best["step"] > step:
        (root / BEST_FILE).unlink()
        for n, d in kept.items():
            loss = json.loads((d / STATE_FILE).read_text()).get("eval_loss")
            if loss is not None:
                update_best(root, n, loss)
