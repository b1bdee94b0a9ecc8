"""Peak memory of training from a large activation dataset (issue 6, "Done means" 4:
a 10 GB dataset trains under 2 GB RSS).

    .venv/bin/python bench/large_dataset_rss.py [--gb 10] [--steps 300] [--d-sae 12288]

Writes (once) ``bench/out/large/acts.npy``: ``--gb`` GB of float32 rows of width 384
(MiniLM's residual width; random values — the contents do not change the memory a
training step needs), then trains a TopK SAE (k 32, batch 4096, the trainer's default
shuffle buffer) on the whole file through ``saestudio.training.Trainer`` in a child
process, and reports that process's peak RSS (``VmHWM``), its RSS at the end, the file
size and tokens/s. Rows are read with ``pread`` in shuffled blocks, never memory-mapped,
so the file's pages do not count against the process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from side_by_side_workers import proc_status_mb

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "large"
D = 384


def _write(path: Path, gb: float) -> int:
    import numpy as np

    rows = int(gb * 1e9) // (D * 4)
    if path.exists() and np.load(path, mmap_mode="r").shape == (rows, D):
        return rows
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, D))
    rng = np.random.default_rng(0)
    step = 1 << 18
    for start in range(0, rows, step):  # 400 MB at a time: the writer itself stays small
        n = min(step, rows - start)
        arr[start : start + n] = rng.standard_normal((n, D), dtype=np.float32)
        print(f"\rwriting {path}: {start + n:,}/{rows:,} rows", end="", flush=True)
    arr.flush()
    del arr
    tmp.rename(path)
    print()
    return rows


def _child(args: argparse.Namespace) -> None:
    import torch

    from saestudio.training import TrainConfig
    from saestudio.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    cfg = TrainConfig.model_validate(
        {
            "activations": str(OUT / "acts.npy"),
            "sae": {"architecture": "topk", "d_sae": args.d_sae, "k": 32},
            "steps": args.steps,
            "batch_size": 4096,
            "out": str(OUT / "run"),
            "checkpoint_every": 0,
            "device": "cpu",
        }
    )
    start = time.perf_counter()
    Trainer(cfg).fit()
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "peak_rss_mb": round(proc_status_mb("VmHWM")),
                "end_rss_mb": round(proc_status_mb("VmRSS")),
                "tokens_per_s": round(args.steps * 4096 / elapsed),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=10.0, help="dataset size in GB (1e9 bytes)")
    ap.add_argument("--steps", type=int, default=300, help="training steps (batch 4096)")
    ap.add_argument("--d-sae", type=int, default=12288)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    rows = _write(OUT / "acts.npy", args.gb)
    size = (OUT / "acts.npy").stat().st_size
    cmd = [sys.executable, __file__, "--child", "--steps", str(args.steps)]
    cmd += ["--d-sae", str(args.d_sae), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(
        f"dataset {size / 1e9:.2f} GB ({rows:,} rows × {D} float32); TopK d_sae "
        f"{args.d_sae}, batch 4096, {args.steps} steps ({args.steps * 4096:,} tokens): "
        f"peak RSS {res['peak_rss_mb']:,} MB, RSS at the end {res['end_rss_mb']:,} MB, "
        f"{res['tokens_per_s']:,} tokens/s"
    )


if __name__ == "__main__":
    main()
