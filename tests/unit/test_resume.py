"""Resume continues exactly: 200 steps straight = 100 steps, stop, resume for 100
(issue 2 "Done means" 5), for every family of architecture and with the schedules,
warm-ups, AuxK and dead-latent counters that carry state across the stop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saestudio.activations.synthetic import make_ground_truth
from saestudio.cli import main
from saestudio.training import TrainConfig, TrainerCallback, train

TIMING = {"tokens_per_s", "time"}


class StopAt(TrainerCallback):
    def __init__(self, step: int, kind: str = "stop"):
        self.at, self.kind, self.step = step, kind, 0

    def on_step(self, step: int) -> None:
        self.step = step

    def should_stop(self) -> bool:
        return self.kind == "stop" and self.step >= self.at

    def should_pause(self) -> bool:
        return self.kind == "pause" and self.step >= self.at


def _lines(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


CASES = {
    # wide enough that latents die, so AuxK and the dead counters carry state across
    "topk": ({"architecture": "topk", "k": 4, "d_sae": 256}, {"dead_after_tokens": 640}),
    "batchtopk": ({"architecture": "batchtopk", "k": 4, "d_sae": 256}, {"dead_after_tokens": 640}),
    "jumprelu": ({"architecture": "jumprelu"}, {"lr": 2e-3}),
    "standard": ({"architecture": "standard"}, {"lr_schedule": "cosine", "lr_warmup_steps": 20}),
    "anthropic": ({"architecture": "standard_anthropic"}, {"grad_clip_norm": 1.0}),
}


@pytest.mark.parametrize("case", CASES)
def test_stop_and_resume_equals_uninterrupted(small_acts: Path, tmp_path: Path, case: str) -> None:
    sae, extra = CASES[case]
    base = {
        "activations": str(small_acts),
        "sae": {"d_sae": 64, **sae},
        "steps": 200,
        "batch_size": 64,
        "log_every": 10,
        "eval_every": 50,
        "checkpoint_every": 0,
        "shuffle_buffer_rows": 512,
        "shuffle_block_rows": 128,
        "density_every": 50,
        **extra,
    }
    straight = train(TrainConfig.model_validate({**base, "out": str(tmp_path / "a")}))
    cfg_b = TrainConfig.model_validate({**base, "out": str(tmp_path / "b")})
    first = train(cfg_b, [StopAt(100)])
    assert (first.status, first.step) == ("stopped", 100)
    assert first.sae_path is None and first.checkpoint is not None
    resumed = train(cfg_b, resume=tmp_path / "b")
    assert (resumed.status, resumed.step) == ("completed", 200)

    wa = load_file(tmp_path / "a" / "sae_weights.safetensors")
    wb = load_file(tmp_path / "b" / "sae_weights.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], msg=f"{case}: {k} differs after resume")
    lines = _lines(tmp_path / "a")
    assert lines == _lines(tmp_path / "b")
    if sae["architecture"] in ("topk", "batchtopk"):
        assert any(x.get("dead_latents", 0) > 0 for x in lines), "no dead latents: AuxK untested"
    # and the run really moved: the resumed half changed the weights
    assert (
        straight.metrics["loss"]
        < json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    )


def test_transcoder_pause_resume(tmp_path: Path) -> None:
    gt = make_ground_truth(3000, d=16, n_features=40, active=3, seed=5, d_out=12)
    np.save(tmp_path / "x.npy", gt.x)
    np.save(tmp_path / "y.npy", gt.y)
    base = {
        "activations": str(tmp_path / "x.npy"),
        "targets": str(tmp_path / "y.npy"),
        "sae": {"architecture": "transcoder", "activation": "jumprelu", "skip": True, "d_sae": 48},
        "steps": 120,
        "batch_size": 50,
        "log_every": 10,
    }
    train(TrainConfig.model_validate({**base, "out": str(tmp_path / "a")}))
    cfg = TrainConfig.model_validate({**base, "out": str(tmp_path / "b")})
    assert train(cfg, [StopAt(37, "pause")]).status == "paused"
    train(cfg, resume=tmp_path / "b" / "checkpoints" / "step_00000037")
    wa = load_file(tmp_path / "a" / "sae_weights.safetensors")
    wb = load_file(tmp_path / "b" / "sae_weights.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])
    assert _lines(tmp_path / "a") == _lines(tmp_path / "b")


def test_cli_resume_after_stop(small_acts: Path, tmp_path: Path) -> None:
    """`saestudio train --resume DIR` continues a stopped run to the same result."""
    args = [
        "--activations",
        str(small_acts),
        "--architecture",
        "topk",
        "--k",
        "4",
        "--d-sae",
        "32",
        "--steps",
        "60",
        "--batch-size",
        "64",
        "--quiet",
        "--checkpoint-every",
        "30",
    ]
    assert main(["train", *args, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *args, "--out", str(tmp_path / "b")]) == 0
    # pretend the second run was killed after its step-30 checkpoint
    (tmp_path / "b" / "sae_weights.safetensors").unlink()
    import shutil

    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_00000060")
    assert main(["train", "--resume", str(tmp_path / "b"), "--quiet"]) == 0
    wa = load_file(tmp_path / "a" / "sae_weights.safetensors")
    wb = load_file(tmp_path / "b" / "sae_weights.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])
    assert _lines(tmp_path / "a") == _lines(tmp_path / "b")
