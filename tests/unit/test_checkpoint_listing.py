"""One listing of a run's checkpoints (``checkpoint.checkpoints``): complete folders
only. A ``step_*.tmp`` left by a kill mid-write (even one whose ``state.json`` was
written), a folder without ``state.json`` and a name that is not a step are ignored by
resume, pruning, the runner and the store, and cleaned by the run's owner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from saestudio.jobs.runner import resume_step
from saestudio.training import TrainConfig, TrainerCallback, train
from saestudio.training import checkpoint as ckpt


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.at, self.step = step, 0

    def on_step(self, step: int) -> None:
        self.step = step

    def should_stop(self) -> bool:
        return self.step >= self.at


def _cfg(small_acts: Path, out: Path, **kw: object) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "activations": str(small_acts),
            "sae": {"architecture": "topk", "d_sae": 32, "k": 4},
            "steps": 60, "batch_size": 64, "log_every": 10, "eval_every": 20,
            "checkpoint_every": 20, "keep_checkpoints": 5, "eval_tokens": 256,
            "shuffle_buffer_rows": 512, "shuffle_block_rows": 64, "out": str(out),
            **kw,
        }
    )  # fmt: skip


def _plant(root: Path, real: Path) -> list[Path]:
    """Leftovers at later steps than any real checkpoint: a .tmp holding a full copy
    (killed between state.json and the rename), a folder without state.json, a
    non-step name and a stray file."""
    tmp = root / "step_00009000.tmp"
    shutil.copytree(real, tmp)
    state = json.loads((tmp / ckpt.STATE_FILE).read_text())
    (tmp / ckpt.STATE_FILE).write_text(json.dumps({**state, "step": 9000}))
    (root / "step_00009500").mkdir()
    (root / "step_00009500" / "sae.safetensors").write_bytes(b"half a file")
    (root / "step_latest").mkdir()
    (root / "step_00009900").write_text("not a folder")
    return [tmp, root / "step_00009500", root / "step_latest", root / "step_00009900"]


def test_listing_ignores_then_cleans_leftovers(small_acts: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_cfg(small_acts, out, steps=40))
    root = out / "checkpoints"
    leftovers = _plant(root, root / "step_00000040")
    assert list(ckpt.checkpoints(root)) == [20, 40]
    assert all(p.exists() for p in leftovers)  # listing alone touches nothing
    assert ckpt.resolve_checkpoint(out) == root / "step_00000040"
    assert ckpt.latest_common_step([root]) == 40
    assert list(ckpt.checkpoints(root, clean=True)) == [20, 40]
    assert not any(p.exists() for p in leftovers)
    assert ckpt.checkpoints(tmp_path / "nothing") == {}


def test_pruning_and_drop_after_survive_leftovers(small_acts: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_cfg(small_acts, out))
    root = out / "checkpoints"
    leftovers = _plant(root, root / "step_00000060")
    # an incomplete folder must not count as one of the last N kept
    removed = ckpt.prune(root, keep_last=1)
    best = json.loads((root / ckpt.BEST_FILE).read_text())["path"]
    kept = {d.name for d in ckpt.checkpoints(root).values()}
    assert kept == {"step_00000060", best}
    assert removed and {p.name for p in removed}.isdisjoint(kept)
    assert not any(p.exists() for p in leftovers)
    _plant(root, root / "step_00000060")
    ckpt.drop_after(root, 20)  # parsed every folder name before: crashed on step_latest
    best_step = int(best.split("_")[1])
    assert list(ckpt.checkpoints(root)) == ([best_step] if best_step <= 20 else [])
    assert not (root / "step_00009000.tmp").exists()


@pytest.mark.parametrize("saes", [1, 2])
def test_resume_takes_the_latest_complete_checkpoint(
    small_acts: Path, tmp_path: Path, saes: int
) -> None:
    out = tmp_path / "run"
    sweep = {"k": [4, 8]} if saes == 2 else {}
    cfg = _cfg(small_acts, out, sweep=sweep)
    train(cfg, [StopAt(40)])
    roots = [Path(job.out) / "checkpoints" for _, job in cfg.sae_jobs()]
    for root in roots:
        _plant(root, root / "step_00000040")
    assert resume_step(cfg) == 40  # the runner's view
    result = train(cfg, resume=out if saes == 2 else roots[0] / "step_00000040")
    assert result.status == "completed" and result.step == 60
    lines = [json.loads(x) for x in (Path(cfg.sae_jobs()[0][1].out) / "metrics.jsonl").open()]
    steps = [x["step"] for x in lines if "loss" in x]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # resumed at 40, not 9000
    for root in roots:
        assert list(ckpt.checkpoints(root))[-1] == 60
        assert not (root / "step_00009000.tmp").exists()  # pruning cleaned them
