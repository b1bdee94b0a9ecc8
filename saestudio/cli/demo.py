"""``saestudio demo`` / ``make run``'s offline half: a short real run anyone can do.

It extracts the demo's activations (:mod:`saestudio.demo`: MiniLM ``resid_post.3`` over
the Python docs), then trains a TopK SAE on them. About a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand to ``saestudio``'s subparsers."""
    p = subparsers.add_parser(
        "demo", help="extract MiniLM activations over the Python docs and train a TopK SAE"
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--steps", type=int, default=400, help="training steps")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(Path(args.out), steps=args.steps)
    return 0


def run_demo(out: Path, steps: int = 400) -> Path:
    from saestudio.activations.extract import extract
    from saestudio.cli.progress import ProgressCallback
    from saestudio.demo import DEMO_HOOK, demo_extract_config, demo_training_config
    from saestudio.training.config import TrainConfig
    from saestudio.training.trainer import Trainer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out.mkdir(parents=True, exist_ok=True)
    acts = out / "activations"
    print(f"1/2 extracting MiniLM {DEMO_HOOK} over the Python docs → {acts}")
    manifest = extract(demo_extract_config(acts))
    print(f"    {manifest.rows:,} rows × {manifest.hooks[DEMO_HOOK].d} (resumes if interrupted)")
    studio = demo_training_config()  # the studio's demo run, in this folder
    cfg = TrainConfig.model_validate(
        {
            **studio,
            "activations": str(acts),
            "steps": steps,
            "out": str(out / "sae"),
            "log_every": 20,
        }
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
