"""CUDA paths: bf16 autocast, torch.compile, CPU/GPU agreement. Skipped without CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saestudio.activations.synthetic import make_ground_truth, recovered_fraction
from saestudio.sae import ARCHITECTURES, SAEConfig, build_sae
from saestudio.sae.saelens_load import load_saelens
from saestudio.training import TrainConfig, TrainerCallback, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(scope="module")
def acts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    gt = make_ground_truth(100_000, d=128, n_features=512, active=4, seed=0)
    path = tmp_path_factory.mktemp("cuda") / "x.npy"
    np.save(path, gt.x)
    return path, gt.dictionary


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cuda_forward_matches_cpu(arch: str) -> None:
    torch.manual_seed(0)
    cfg = SAEConfig(architecture=arch, k=8).resolved(64, 48 if arch == "transcoder" else None)
    cpu = build_sae(cfg).eval()
    gpu = build_sae(cfg).cuda().eval()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(32, 64)
    out_c, out_g = cpu(x), gpu(x.cuda())
    torch.testing.assert_close(out_g.x_hat.cpu(), out_c.x_hat, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("arch", "compile_"),
    [
        ("topk", False),
        ("topk", True),
        ("batchtopk", False),
        ("jumprelu", False),
        ("jumprelu", True),
        ("standard", True),
    ],
)
def test_bf16_training_on_cuda(
    acts: tuple[Path, np.ndarray], tmp_path: Path, arch: str, compile_: bool
) -> None:
    path, dictionary = acts
    sae = {"architecture": arch, "d_sae": 1024}
    if arch in ("topk", "batchtopk"):
        sae["k"] = 4
    cfg = TrainConfig.model_validate(
        {
            "activations": str(path),
            "sae": sae,
            "steps": 700,
            "batch_size": 1024,
            "lr": 4e-3 if arch == "jumprelu" else 1e-3,
            "out": str(tmp_path),
            "device": "cuda",
            "autocast": "bf16",
            "compile": compile_,
            "log_every": 50,
        }
    )
    result = train(cfg)
    assert result.status == "completed"
    exported = load_saelens(result.sae_path)
    assert recovered_fraction(dictionary, exported.W_dec) >= 0.9
    assert result.eval["eval_fvu"] < 0.5


def test_cuda_resume_equals_uninterrupted(acts: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    class StopAt(TrainerCallback):
        step = 0

        def on_step(self, step: int) -> None:
            self.step = step

        def should_stop(self) -> bool:
            return self.step >= 50

    path, _ = acts
    base = {
        "activations": str(path),
        "sae": {"architecture": "topk", "k": 4, "d_sae": 512},
        "steps": 100,
        "batch_size": 512,
        "device": "cuda",
        "autocast": "none",
        "compile": False,
    }
    train(TrainConfig.model_validate({**base, "out": str(tmp_path / "a")}))
    cfg = TrainConfig.model_validate({**base, "out": str(tmp_path / "b")})
    train(cfg, [StopAt()])
    train(cfg, resume=tmp_path / "b")
    wa = load_file(tmp_path / "a" / "sae_weights.safetensors")
    wb = load_file(tmp_path / "b" / "sae_weights.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    n = len((tmp_path / "a" / "metrics.jsonl").read_text().splitlines())
    assert n == len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines())
    assert json.loads((tmp_path / "a" / "cfg.json").read_text())["dtype"] == "float32"
