"""Training from activation datasets and on the fly (issue 3): many SAEs from one stream
equal each trained alone, on-the-fly training resumes exactly, and runs on a causal LM
report CE loss recovered."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saestudio.activations.extract import ExtractConfig, extract
from saestudio.activations.store import DataError
from saestudio.training import TrainConfig, TrainerCallback, train


@pytest.fixture(scope="module")
def gpt2_acts(model_dirs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("acts") / "gpt2"
    extract(
        ExtractConfig(
            model=model_dirs["gpt2"],
            dataset="demo:pydoc",
            hooks=["resid_post.0", "resid_post.1"],
            out=str(out),
            context_length=32,
            max_tokens=8192,
            batch_size=16,
        ),
        progress=False,
    )
    return out


def _lines(path: Path) -> list[dict]:
    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("sae", "tokens_per_s", "time")} for r in rows]


def _job(**kw: object) -> TrainConfig:
    base: dict = {
        "sae": {"architecture": "topk", "d_sae": 128, "k": 4},
        "steps": 40,
        "batch_size": 128,
        "log_every": 10,
        "eval_tokens": 512,
        "shuffle_buffer_rows": 1024,
        "shuffle_block_rows": 256,
    }
    base.update(kw)
    return TrainConfig.model_validate(base)


def test_two_hooks_times_two_k_equal_four_separate_runs(gpt2_acts: Path, tmp_path: Path) -> None:
    job = train(
        _job(
            activations=str(gpt2_acts),
            hook="resid_post.0,resid_post.1",
            sweep="k=2,6",
            out=str(tmp_path / "job"),
        )
    )
    assert len(job.saes) == 4
    for hook in ("resid_post.0", "resid_post.1"):
        for k in (2, 6):
            label = f"{hook}_k={k}"
            alone = tmp_path / f"alone_{label}"
            train(
                _job(
                    activations=str(gpt2_acts),
                    hook=hook,
                    out=str(alone),
                    sae={"architecture": "topk", "d_sae": 128, "k": k},
                )
            )
            joint = tmp_path / "job" / label
            cfg = json.loads((joint / "cfg.json").read_text())
            assert (cfg["k"], cfg["metadata"]["hook_name"]) == (k, hook)
            wa, wb = (
                load_file(alone / "sae_weights.safetensors"),
                load_file(joint / "sae_weights.safetensors"),
            )
            for name in wa:
                torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=0)
            assert _lines(joint) == _lines(alone)
            # a causal LM and its text are known: CE loss recovered is reported
            final = [x for x in _lines(joint) if "ce_loss_recovered" in x]
            assert final and math.isfinite(final[-1]["ce_clean"])


def test_incomplete_or_unknown_hook_is_refused(gpt2_acts: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="resid_post.0"):  # lists the hooks it has
        train(_job(activations=str(gpt2_acts), hook="mlp_out.0", out=str(tmp_path)))
    manifest = json.loads((gpt2_acts / "manifest.json").read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    for child in gpt2_acts.iterdir():
        (broken / child.name).symlink_to(child)
    (broken / "manifest.json").unlink()
    (broken / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(DataError, match="incomplete"):
        train(_job(activations=str(broken), hook="resid_post.0", out=str(tmp_path / "r")))


class _StopAt(TrainerCallback):
    step = 0

    def on_step(self, step: int) -> None:
        self.step = step

    def should_stop(self) -> bool:
        return self.step >= 15


def test_on_the_fly_trains_and_resumes_exactly(model_dirs: dict[str, str], tmp_path: Path) -> None:
    base = {
        "model": model_dirs["gpt2"],
        "dataset": "demo:pydoc",
        "hook": "resid_post.1",
        "context_length": 32,
        "steps": 30,
        "model_batch_size": 8,
    }
    straight = train(_job(**base, out=str(tmp_path / "a")))
    assert straight.status == "completed"
    cfg_b = _job(**base, out=str(tmp_path / "b"))
    assert train(cfg_b, [_StopAt()]).status == "stopped"
    train(cfg_b, resume=tmp_path / "b")
    wa = load_file(tmp_path / "a" / "sae_weights.safetensors")
    wb = load_file(tmp_path / "b" / "sae_weights.safetensors")
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name])
    assert _lines(tmp_path / "a") == _lines(tmp_path / "b")
    ce = straight.eval["ce_loss_recovered"]
    assert math.isfinite(ce)
