"""Training tokens/s from a cached activation dataset vs. on the fly from the model.

    python bench/onthefly_vs_cached.py [--steps 100] [--batch-size 512]

MiniLM layer-3 residuals over the demo text; the same TopK SAE (k 32, d_sae 1536) is
trained both ways, in one run. Cached reads memory-mapped shards; on the fly runs the
model (stopping after layer 3) in a background thread while the SAE trains.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from saestudio.activations.extract import extract
from saestudio.demo import DEMO_HOOK, demo_extract_config, demo_model_dir
from saestudio.training import TrainConfig, train

HERE = Path(__file__).parent / "out"


def rate(out: Path) -> float:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [x["tokens_per_s"] for x in lines if "tokens_per_s" in x][1:]
    return statistics.median(rates)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=512)
    args = p.parse_args()
    acts = HERE / "minilm_l3"
    extract(demo_extract_config(acts), progress=False)
    common = {
        "hook": DEMO_HOOK,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "sae": {"architecture": "topk", "k": 32, "expansion_factor": 4},
        "log_every": max(1, args.steps // 5),
        "checkpoint_every": 0,
        "downstream_contexts": 0,
        "shuffle_buffer_rows": 16384,
    }
    results = {}
    for name, extra in (
        ("cached", {"activations": str(acts)}),
        (
            "on-the-fly",
            {
                "model": demo_model_dir(),
                "dataset": "demo:pydoc",
                "exclude_special_tokens": True,
                "model_batch_size": 32,
            },
        ),
    ):
        t0 = time.perf_counter()
        out = HERE / f"otf_{name}"
        train(TrainConfig.model_validate({**common, **extra, "out": str(out)}))
        results[name] = (rate(out), time.perf_counter() - t0)
    for name, (tps, wall) in results.items():
        print(f"{name:>11}: {tps:>9,.0f} tokens/s (median of logged intervals), {wall:.1f} s wall")
    print(f"on-the-fly / cached: {results['on-the-fly'][0] / results['cached'][0]:.2f}")


if __name__ == "__main__":
    main()
