"""Issue 13: every architecture at its defaults, on data with a large constant offset
(norm of the mean ≫ the spread, as residual streams have), ends no worse than predicting
the mean — held-out FVU ≤ 1 at every evaluation — and the biases start at the data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from saestudio.activations.synthetic import make_ground_truth
from saestudio.sae import SAEConfig
from saestudio.sae.saelens_load import load_saelens
from saestudio.training import TrainConfig, train

D, D_OUT, D_SAE = 16, 12, 64
OFFSET_RATIO = 100.0  # ‖offset‖ / spread


def _offset(x: np.ndarray, seed: int) -> np.ndarray:
    """A random constant vector OFFSET_RATIO times the rows' spread E‖x − x̄‖."""
    spread = float(np.sqrt(((x - x.mean(0)) ** 2).sum(1)).mean())
    v = np.random.default_rng(seed).standard_normal(x.shape[1]).astype(np.float32)
    return (v * OFFSET_RATIO * spread / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("offset")
    gt = make_ground_truth(8000, d=D, n_features=48, active=3, seed=0, d_out=D_OUT)
    assert gt.y is not None
    np.save(root / "x.npy", gt.x + _offset(gt.x, 1))
    np.save(root / "y.npy", gt.y + _offset(gt.y, 2))
    return {"x": root / "x.npy", "y": root / "y.npy", "root": root}


ARCHS: dict[str, dict[str, Any]] = {
    "standard": {"architecture": "standard"},
    "standard_anthropic": {"architecture": "standard_anthropic"},
    "jumprelu": {"architecture": "jumprelu"},
    "topk": {"architecture": "topk", "k": 4},
    "batchtopk": {"architecture": "batchtopk", "k": 4},
    "matryoshka_batchtopk": {"architecture": "matryoshka_batchtopk", "k": 4},
    "skip": {"architecture": "skip"},
    "transcoder": {"architecture": "transcoder"},
    "transcoder_topk": {"architecture": "transcoder", "activation": "topk", "k": 4},
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_architecture_beats_the_mean_on_offset_data(data: dict[str, Path], arch: str) -> None:
    spec = ARCHS[arch]
    transcoder = spec["architecture"] == "transcoder"
    out = data["root"] / arch
    cfg = TrainConfig(
        activations=str(data["x"]),
        targets=str(data["y"]) if transcoder else None,
        sae=SAEConfig(d_sae=D_SAE, **spec),
        steps=300,
        batch_size=256,
        eval_tokens=1024,
        eval_every=50,
        log_every=25,
        out=str(out),
        device="cpu",
    )
    res = train(cfg)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [x["eval_fvu"] for x in lines if "eval_fvu" in x]
    assert len(evals) >= 6
    assert max(evals) <= 1.0, f"{arch}: held-out FVU {evals}"
    assert res.eval["eval_fvu"] <= 1.0
    first_eval = next(x["step"] for x in lines if "eval_fvu" in x)
    train_fvu = [x["fvu"] for x in lines if "fvu" in x and x["step"] >= first_eval]
    assert max(train_fvu) <= 1.0, f"{arch}: training FVU {train_fvu}"

    # the export is the same function on raw (offset) inputs: centre and scale folded in
    sae = load_saelens(res.sae_path)
    held_out = 800  # eval_tokens capped at 10 % of the 8,000 rows: the last 800
    x = torch.from_numpy(np.load(data["x"])[-held_out:])
    y = torch.from_numpy(np.load(data["y"])[-held_out:]) if transcoder else x
    with torch.no_grad():
        x_hat = sae(x).x_hat
    fvu = float(((y - x_hat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    assert fvu == pytest.approx(res.eval["eval_fvu"], rel=1e-3, abs=1e-4)


def test_decoder_bias_starts_at_the_data_mean(data: dict[str, Path], tmp_path: Path) -> None:
    from saestudio.training.trainer import Trainer

    for norm in ("none", "expected_average_only_in", "unit_mean_squared_norm"):
        cfg = TrainConfig(
            activations=str(data["x"]),
            sae=SAEConfig(architecture="standard", d_sae=D_SAE),
            normalize_activations=norm,
            steps=1,
            batch_size=64,
            out=str(tmp_path / norm),
            device="cpu",
        )
        run = Trainer(cfg).runs[0]
        x = torch.from_numpy(np.load(data["x"]))
        mean = x.mean(0) * run.scale_in
        torch.testing.assert_close(run.sae.b_dec.detach(), mean, rtol=2e-2, atol=1e-3)
        torch.testing.assert_close(run.sae.input_centre, mean, rtol=2e-2, atol=1e-3)
        # the scale is the spread's, so the offset does not shrink the signal
        spread = (x - x.mean(0)).norm(dim=1).mean() * run.scale_in
        if norm == "expected_average_only_in":
            assert float(spread) == pytest.approx(D**0.5, rel=0.05)
