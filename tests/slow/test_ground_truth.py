"""Ground truth: trained through the public ``train`` entry point, each architecture finds
the known dictionary (SPEC §2.A; issue 2 "Done means" 2 and 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from saestudio.activations.synthetic import GroundTruth, make_ground_truth, recovered_fraction
from saestudio.sae.saelens_load import load_saelens
from saestudio.training import TrainConfig, train

pytestmark = pytest.mark.slow

STEPS = 700


def _cfg(path: Path, out: Path, arch: str, **kw: object) -> TrainConfig:
    sae = {"architecture": arch, "d_sae": 1024}
    sae.update(kw.pop("sae", {}))  # type: ignore[arg-type]
    return TrainConfig.model_validate(
        {
            "activations": str(path),
            "sae": sae,
            "steps": STEPS,
            "batch_size": 1024,
            "lr": 1e-3,
            "out": str(out),
            "log_every": 50,
            "eval_every": 1000,
            "checkpoint_every": 0,
            **kw,
        }
    )


@pytest.mark.parametrize(
    ("arch", "sae_kw"),
    [
        ("standard", {}),
        ("standard_anthropic", {}),
        ("jumprelu", {}),
        ("topk", {"k": 4}),
        ("batchtopk", {"k": 4}),
    ],
)
def test_recovers_true_directions(
    ground_truth: tuple[Path, GroundTruth], tmp_path: Path, arch: str, sae_kw: dict
) -> None:
    path, gt = ground_truth
    result = train(_cfg(path, tmp_path / arch, arch, sae=sae_kw))
    assert result.status == "completed"
    sae = load_saelens(result.sae_path)  # the exported SAELens folder, not the live module
    frac = recovered_fraction(gt.dictionary, sae.W_dec, threshold=0.9)
    assert frac >= 0.9, f"{arch}: only {frac:.0%} of true directions found"
    assert result.eval["eval_fvu"] < 0.5  # L1 shrinkage keeps λ=5 runs above 0.2
    assert 1.0 <= result.eval["eval_l0"] <= 20


def test_jumprelu_l0_responds_to_coefficient(tmp_path: Path) -> None:
    """The seed's JumpReLU could not move L0 (erratum 2); ours must, by a clear margin.

    Coefficients start at 0 here so weak activations exist for the penalty to trade off;
    lr 4e-3 lets the thresholds reach equilibrium within a short run. Since the encoder
    reads x − E[x] and starts at a least-squares scale (issue 13), λ 1e-3 already reaches
    the data's own sparsity (L0 ≈ 4 of 4 active; 1e-2 and 3e-2 give 2.9 and 2.8), so the
    pair that shows the penalty working is 1e-4 (L0 ≈ 120) against 1e-3.
    """
    gt = make_ground_truth(100_000, d=128, n_features=512, active=4, seed=0, min_coef=0.0)
    path = tmp_path / "x.npy"
    np.save(path, gt.x)
    runs = {}
    for lam in (1e-4, 1e-3):
        cfg = _cfg(
            path, tmp_path / f"lam{lam}", "jumprelu", sparsity_coefficient=lam, steps=500, lr=4e-3
        )
        runs[lam] = train(cfg).eval["eval_l0"]
    assert runs[1e-3] < 0.7 * runs[1e-4], (
        f"L0 {runs[1e-4]:.2f} at λ=1e-4 vs {runs[1e-3]:.2f} at 1e-3"
    )


def test_transcoder_recovers_sparse_map(tmp_path: Path) -> None:
    gt = make_ground_truth(100_000, d=128, n_features=512, active=4, seed=2, d_out=96)
    x, y = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(x, gt.x)
    np.save(y, gt.y)
    cfg = _cfg(
        x,
        tmp_path / "tc",
        "transcoder",
        targets=str(y),
        lr=2e-3,
        sae={"activation": "topk", "k": 4},
        hook="mlp_in.0",
        target_hook="mlp_out.0",
    )
    result = train(cfg)
    sae = load_saelens(result.sae_path)
    assert sae.W_dec.shape == (1024, 96)
    frac = recovered_fraction(gt.dictionary_out, sae.W_dec)
    assert frac >= 0.9, f"transcoder found only {frac:.0%} of the output directions"
    assert result.eval["eval_fvu"] < 0.2


def test_skip_transcoder_puts_linear_part_in_w_skip(tmp_path: Path) -> None:
    """y = sparse map of the codes + L·x. The dense input noise (σ 0.3) is reachable only
    through a linear path, which is what pins W_skip to L rather than to anything the
    latents could absorb."""
    g = torch.Generator().manual_seed(3)
    linear = torch.randn(96, 128, generator=g) / 128**0.5  # [d_out, d_in]
    gt = make_ground_truth(
        100_000, d=128, n_features=512, active=4, seed=3, d_out=96, linear=linear, noise=0.3
    )
    x, y = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(x, gt.x)
    np.save(y, gt.y)
    cfg = _cfg(
        x,
        tmp_path / "skip",
        "transcoder",
        targets=str(y),
        lr=3e-3,
        sae={"activation": "topk", "k": 4, "skip": True},
        hook="mlp_in.0",
        target_hook="mlp_out.0",
    )
    result = train(cfg)
    sae = load_saelens(result.sae_path)
    assert sae.W_skip is not None
    rel = float((sae.W_skip.detach() - linear).norm() / linear.norm())
    assert rel < 0.25, f"W_skip is {rel:.0%} away from the true linear part"
    assert result.eval["eval_fvu"] < 0.3
