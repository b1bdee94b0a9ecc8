"""A8 Matryoshka BatchTopK: the nested prefix losses against a plain formula, the sparse
training path against the dense one, the config's checks, and training end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from saestudio.activations.synthetic import make_ground_truth
from saestudio.sae import LossSettings, SAEConfig, build_sae
from saestudio.sae.config import default_matryoshka_widths
from saestudio.sae.matryoshka import MatryoshkaBatchTopKSAE

D_IN, D_SAE, K = 24, 96, 6
WIDTHS = (8, 32, D_SAE)


def _sae(seed: int = 0, d_out: int | None = None, **fields: object) -> MatryoshkaBatchTopKSAE:
    torch.manual_seed(seed)
    arch = {"architecture": "matryoshka_batchtopk"}
    if d_out is not None:
        arch = {"architecture": "transcoder", "activation": "matryoshka_batchtopk"}
    cfg = SAEConfig(**arch, k=K, d_sae=D_SAE, matryoshka_widths=WIDTHS, **fields)
    sae = build_sae(cfg.resolved(D_IN, d_out))
    assert isinstance(sae, MatryoshkaBatchTopKSAE)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return sae


def test_loss_is_the_sum_of_prefix_reconstruction_errors() -> None:
    sae = _sae()
    x = torch.randn(40, D_IN)
    sae.train()
    with torch.no_grad():
        res = sae._dense_loss(x, x, LossSettings())
        z = res.out.z
        expected = 0.0
        for w in WIDTHS:  # plain formula: x̂_w = z[:, :w] W_dec[:w] + b_dec
            rec = z[:, :w] @ sae.W_dec[:w] + sae.b_dec
            expected += ((x - rec) ** 2).sum(1).mean()
    torch.testing.assert_close(res.loss, torch.as_tensor(expected))
    assert set(res.terms) == {"mse", "mse_8", "mse_32"}
    # the batch keeps k·batch latents, some of them outside the first level
    assert int((z != 0).sum()) == K * 40
    assert bool((z[:, 32:] != 0).any()) and bool((z[:, :8] != 0).any())


@pytest.mark.parametrize("aux", ["none", "plain", "per_level"])
@pytest.mark.parametrize("transcoder", [False, True])
def test_sparse_training_path_equals_dense(aux: str, transcoder: bool) -> None:
    d_out = 20 if transcoder else None
    sae = _sae(seed=3, d_out=d_out, matryoshka_aux_per_level=aux == "per_level")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(37, D_IN, generator=g)
    target = torch.randn(37, d_out, generator=g) if d_out else x
    dead = torch.rand(D_SAE, generator=g) < 0.5
    settings = LossSettings(
        dead_mask=None if aux == "none" else dead,
        aux_k=5,
        aux_coefficient=0.0 if aux == "none" else 0.3,
    )
    sae.train()
    state = {k: v.clone() for k, v in sae.state_dict().items()}
    fast = sae.loss(x, target, settings)
    assert fast.out.z.is_sparse, "training should take the sparse path"
    sae.zero_grad()
    fast.loss.backward()
    g_fast = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.load_state_dict(state)
    plain = sae._dense_loss(x, target, settings)
    sae.zero_grad()
    plain.loss.backward()
    torch.testing.assert_close(fast.loss, plain.loss)
    assert fast.terms.keys() == plain.terms.keys()
    for name in plain.terms:
        torch.testing.assert_close(fast.terms[name], plain.terms[name], msg=name)
    if aux != "none":
        assert float(plain.terms["auxk"].detach()) > 0
    for n, p in sae.named_parameters():
        torch.testing.assert_close(g_fast[n], p.grad, msg=n)


def test_default_widths_are_a_geometric_ladder_ending_at_d_sae() -> None:
    assert default_matryoshka_widths(16384) == (256, 1024, 4096, 16384)
    assert default_matryoshka_widths(8) == (2, 8)
    cfg = SAEConfig(architecture="matryoshka_batchtopk").resolved(64)
    assert cfg.matryoshka_widths == default_matryoshka_widths(512)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"matryoshka_widths": (32, 16, 96)}, "strictly increasing"),
        ({"matryoshka_widths": (16, 64)}, "last width must equal d_sae"),
        ({"matryoshka_widths": (0, 96)}, "positive"),
        ({"architecture": "batchtopk", "matryoshka_widths": (16, 96)}, "only for"),
    ],
)
def test_bad_widths_are_refused_naming_the_field(fields: dict, message: str) -> None:
    spec = {"architecture": "matryoshka_batchtopk", "d_sae": 96, **fields}
    with pytest.raises(ValidationError, match="matryoshka_widths") as e:
        SAEConfig(**spec)
    assert message in str(e.value)


def test_cli_trains_a_sweep_and_infers_with_the_batchtopk_threshold(tmp_path: Path) -> None:
    """A user's command: ``--matryoshka-widths`` and ``--sweep k=…`` (one SAE per k); the
    held-out L0 comes from the exported threshold, near each run's k."""
    data = make_ground_truth(6000, d=16, n_features=64, active=3, seed=0).x
    np.save(tmp_path / "x.npy", data)
    run = tmp_path / "run"
    argv = [
        "train", "--activations", str(tmp_path / "x.npy"),
        "--architecture", "matryoshka_batchtopk", "--d-sae", "64",
        "--matryoshka-widths", "16,64", "--sweep", "k=3,6", "--steps", "150",
        "--batch-size", "256", "--eval-tokens", "512", "--device", "cpu",
        "--out", str(run), "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "saestudio.cli", *argv], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    for k in (3, 6):
        folder = run / f"k={k}"
        cfg = json.loads((folder / "cfg.json").read_text())
        assert cfg["architecture"] == "jumprelu"
        assert cfg["saestudio"]["matryoshka_widths"] == [16, 64]
        lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        assert any("mse_16" in line for line in lines)  # the inner level's term is logged
        final = [line for line in lines if "eval_fvu" in line][-1]
        assert final["eval_fvu"] < 0.6
        assert 0.5 * k < final["eval_l0"] < 2 * k
