"""``saestudio demo`` / ``make run``: a short real training anyone can run offline.

Activations come from a known random dictionary (see ``activations.synthetic``), so the
demo can also say how many of the true directions the SAE found.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saestudio.activations.synthetic import make_ground_truth, recovered_fraction
from saestudio.progress import ProgressCallback
from saestudio.sae.saelens_load import load_saelens
from saestudio.training.config import TrainConfig
from saestudio.training.trainer import Trainer


def run_demo(out: Path, steps: int = 600) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    data = out / "activations.npy"
    gt = make_ground_truth(100_000, d=128, n_features=512, active=4, seed=0)
    np.save(data, gt.x)
    print(f"demo data: {data} (100,000 × 128, sparse mixes of 512 known directions)")
    cfg = TrainConfig(
        activations=str(data),
        sae={"architecture": "topk", "d_sae": 1024, "k": 4},
        steps=steps,
        batch_size=1024,
        lr=1e-3,
        out=str(out / "sae"),
        log_every=20,
        checkpoint_every=200,
    )
    progress = ProgressCallback()
    result = Trainer(cfg, [progress]).fit()
    assert result.sae_path is not None
    sae = load_saelens(result.sae_path)
    ev = result.eval
    print(
        f"\nFVU {ev['eval_fvu']:.4f}   L0 {ev['eval_l0']:.1f}   (held-out rows)\n"
        f"true directions recovered (cos ≥ 0.9): {recovered_fraction(gt.dictionary, sae.W_dec):.0%}\n"
        f"SAE written to {result.sae_path} (SAELens format: cfg.json + sae_weights.safetensors)"
    )
    return result.sae_path
