"""Does JumpReLU's L0 target mode reach the requested L0? (issue 6 "Done means" 3)

    python bench/jumprelu_l0_target.py [--target 32] [--tokens 2000000] [--lr 7e-5]

Trains a JumpReLU SAE (d_sae 3072, batch 4096) through SAE Studio's real ``Trainer`` on
the side-by-side activations (``bench/side_by_side.py prepare``) with ``l0_target`` set,
and prints the training L0 along the way and the held-out L0 at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from saestudio.training import TrainConfig
from saestudio.training.trainer import Trainer

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target", type=float, default=32.0)
    p.add_argument("--tokens", type=int, default=2_000_000)
    p.add_argument("--d-sae", type=int, default=3072)
    p.add_argument("--lr", type=float, help="default: the JumpReLU default (7e-5)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    steps = -(-args.tokens // 4096)
    out = OUT / "jumprelu_l0_target"
    cfg = TrainConfig.model_validate(
        {
            "activations": str(OUT / "side_by_side" / "train.npy"),
            "sae": {"architecture": "jumprelu", "d_sae": args.d_sae},
            "steps": steps,
            "batch_size": 4096,
            "l0_target": args.target,
            **({"lr": args.lr} if args.lr else {}),
            "out": str(out),
            "log_every": max(1, steps // 10),
            "eval_every": 10**9,
            "density_every": 10**9,
            "checkpoint_every": 0,
            "device": "cpu",
        }
    )
    t0 = time.perf_counter()
    result = Trainer(cfg).fit()
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [(x["step"], round(x["l0"], 1)) for x in lines if "l0" in x and "step" in x]
    l0 = result.eval["eval_l0"]
    print(f"training L0 by step: {curve}")
    print(
        f"target {args.target}: held-out L0 {l0:.2f} ({100 * (l0 / args.target - 1):+.1f} %), "
        f"held-out FVU {result.eval['eval_fvu']:.4f}, {steps} steps × 4096 tokens, "
        f"lr {result.metrics.get('lr')}, {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
