"""Each core evaluation metric (saestudio.training.evaluation) against its plain formula,
computed here in numpy float64 over all rows at once; the module streams batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saestudio.activations.synthetic import make_ground_truth
from saestudio.sae import SAEConfig, build_sae
from saestudio.training import TrainConfig, train
from saestudio.training.evaluation import batched, core_metrics

D, D_SAE = 12, 40


def _sae(arch: str = "standard", d_out: int | None = None):
    torch.manual_seed(0)
    fields = {"architecture": arch, "d_sae": D_SAE}
    if arch == "transcoder":
        fields["activation"] = "relu"
    sae = build_sae(SAEConfig(**fields).resolved(D, d_out))
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn_like(sae.W_enc))
        sae.b_enc.copy_(0.2 * torch.randn(D_SAE) - 0.1)
        sae.W_dec.mul_(1 + torch.rand(D_SAE, 1))
        sae.b_dec.copy_(torch.randn_like(sae.b_dec))
        sae.W_dec[1] = 2.5 * sae.W_dec[0]  # a duplicated latent: max dec-dec cosine 1
        sae.b_enc[2] = -1e3  # a latent that never fires
        sae.b_enc[3] = 1e3  # one that always fires
    return sae.eval()


def _plain(sae, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    with torch.no_grad():
        out = sae(torch.from_numpy(x))
    xh, z = out.x_hat.double().numpy(), out.z.double().numpy()
    y = y.astype(np.float64)
    err = ((y - xh) ** 2).sum(1)
    fvu = err.sum() / ((y - y.mean(0)) ** 2).sum()
    ny, nh = np.linalg.norm(y, axis=1), np.linalg.norm(xh, axis=1)
    dot = (y * xh).sum(1)
    fired = (z != 0).mean(0)
    wd = sae.W_dec.detach().double().numpy()
    wd = wd / np.linalg.norm(wd, axis=1, keepdims=True)
    gram = np.abs(wd @ wd.T)
    np.fill_diagonal(gram, -1)
    res = {
        "explained_variance": 1 - fvu,
        "fvu": fvu,
        "mse": err.mean(),
        "mse_per_element": ((y - xh) ** 2).mean(),
        "cossim": (dot / (ny * nh)).mean(),
        "l2_ratio": (nh / ny).mean(),
        "relative_reconstruction_bias": (nh**2).mean() / dot.mean(),
        "l0": (z != 0).sum(1).mean(),
        "l1": np.abs(z).sum(1).mean(),
        "dead_latents": int((fired == 0).sum()),
        "dense_latents_1pct": int((fired > 0.01).sum()),
        "dense_latents_10pct": int((fired > 0.10).sum()),
        "dec_dec_max_cosine": gram.max(),
        "dec_dec_max_cosine_mean": gram.max(1).mean(),
    }
    if x.shape[1] == y.shape[1]:
        we = sae.W_enc.detach().double().numpy().T
        we = we / np.linalg.norm(we, axis=1, keepdims=True)
        cos = (we * wd).sum(1)
        res["enc_dec_cosine_mean"] = cos.mean()
        res["enc_dec_cosine_min"] = cos.min()
    return res


@pytest.mark.parametrize("offset", [0.0, 1e3])
@pytest.mark.parametrize("arch", ["standard", "transcoder"])
def test_every_metric_matches_its_plain_formula(arch: str, offset: float) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1000, D)) + offset).astype(np.float32)
    d_out = 9 if arch == "transcoder" else None
    y = (
        x
        if d_out is None
        else (x[:, :d_out] * 1.5 + rng.standard_normal((1000, d_out))).astype(np.float32)
    )
    sae = _sae(arch, d_out)
    if offset:  # centre the SAE on the data, so the reconstruction is meaningful
        with torch.no_grad():
            sae.input_centre.fill_(offset)
            sae.b_dec.add_(torch.from_numpy(y.mean(0)))
    got = core_metrics(
        sae, batched(torch.from_numpy(x), None if d_out is None else torch.from_numpy(y), 96)
    )
    want = _plain(sae, x, y)
    assert got["eval_rows"] == 1000
    assert set(want) <= set(got)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert got["dead_latents"] >= 1 and got["dense_latents_10pct"] >= 1
    assert got["dec_dec_max_cosine"] == pytest.approx(1.0, abs=1e-5)
    if d_out is None:
        assert "enc_dec_cosine_mean" in got
    else:
        assert "enc_dec_cosine_mean" not in got  # different spaces: not defined


def test_run_logs_every_core_metric_at_each_eval_and_at_the_end(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", make_ground_truth(3000, d=D, n_features=30, active=2).x)
    cfg = TrainConfig(
        activations=str(tmp_path / "x.npy"),
        sae=SAEConfig(architecture="topk", d_sae=D_SAE, k=3),
        steps=40,
        batch_size=128,
        eval_every=20,
        eval_tokens=256,
        out=str(tmp_path / "run"),
        device="cpu",
    )
    res = train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval_fvu" in x]
    names = {
        "eval_explained_variance", "eval_mse", "eval_cossim", "eval_l2_ratio",
        "eval_relative_reconstruction_bias", "eval_l0", "eval_l1", "eval_dead_latents",
        "eval_dense_latents_1pct", "eval_dense_latents_10pct", "eval_enc_dec_cosine_mean",
        "eval_dec_dec_max_cosine",
    }  # fmt: skip
    assert [x["step"] for x in evals][:1] == [20] and evals[-1]["step"] == 40
    for line in evals:
        assert names <= set(line), names - set(line)
    assert names <= set(res.eval)
    assert 0 < res.eval["eval_cossim"] <= 1 and 0 < res.eval["eval_l2_ratio"] < 2
