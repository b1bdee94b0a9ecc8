"""Trainer throughput: tokens/s of SAE Studio's real training loop (data reading included).

    python bench/train_throughput.py [--acts ACTS.npy] [--d-sae 12288] [--batch-size 4096]
        [--steps 40] [--archs topk standard] [--device auto] [--compile/--no-compile]

Without ``--acts`` it writes 300k synthetic 384-d rows (the width of MiniLM's residual
stream) to bench/out/. It reports the median tokens/s over the logged intervals after
the first (which holds warm-up and, on GPU, compilation), plus peak RSS.
Comparisons with SAELens and sparsify come with the speed issue (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from saestudio.activations.synthetic import make_ground_truth
from saestudio.training import TrainConfig, train

HERE = Path(__file__).parent


def synthetic_acts(rows: int = 300_000, d: int = 384) -> Path:
    path = HERE / "out" / f"synthetic_{rows}x{d}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        gt = make_ground_truth(rows, d=d, n_features=4 * d, active=16, noise=0.05, seed=0)
        np.save(path, gt.x)
    return path


def run(arch: str, acts: Path, args: argparse.Namespace) -> dict[str, object]:
    sae = {"architecture": arch, "d_sae": args.d_sae}
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        sae["k"] = args.k
    log_every = max(1, args.steps // 5)
    cfg = TrainConfig.model_validate(
        {
            "activations": str(acts),
            "sae": sae,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "out": str(HERE / "out" / f"run_{arch}"),
            "log_every": log_every,
            "eval_every": 10**9,
            "density_every": 10**9,
            "checkpoint_every": 0,
            "device": args.device,
            "compile": args.compile,
            "shuffle_buffer_rows": 262144,
            "shuffle_block_rows": 4096,
        }
    )
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    lines = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    rates = [x["tokens_per_s"] for x in lines if "tokens_per_s" in x][1:]
    return {
        "arch": arch,
        "d_sae": args.d_sae,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "tokens_per_s": round(statistics.median(rates)) if rates else None,
        "wall_s": round(wall, 1),
        "fvu": round(result.metrics["fvu"], 4),
        "l0": round(result.metrics["l0"], 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--acts", type=Path, help="[N, d] .npy (default: synthetic 300k × 384)")
    p.add_argument("--archs", nargs="+", default=["topk", "standard"])
    p.add_argument("--d-sae", type=int, default=12288)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    acts = args.acts or synthetic_acts()
    dev = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available() and args.device != "cpu"
        else platform.processor() or platform.machine()
    )
    print(
        f"torch {torch.__version__}, device: {dev}, threads {torch.get_num_threads()}, data {acts}"
    )
    results = [run(a, acts, args) for a in args.archs]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for r in results:
        print(
            f"{r['arch']:>10}  d_sae {r['d_sae']:>6}  batch {r['batch_size']}  "
            f"{r['tokens_per_s']:>10,} tokens/s   FVU {r['fvu']:.3f}  L0 {r['l0']:.1f}  ({r['wall_s']} s)"
        )
    print(f"peak RSS {peak_mb:,.0f} MB")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": dev,
                    "torch": torch.__version__,
                    "results": results,
                    "peak_rss_mb": round(peak_mb),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
