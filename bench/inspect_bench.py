"""Feature inspection: speed against a bare encoder pass, and memory against the row count
(issue 12, "Done means": speed ≤ 1.5× at top-N 20; peak RSS flat across a 10× dataset).

    .venv/bin/python bench/inspect_bench.py speed  [--rows 1000000] [--d-sae 12288] [--k 32]
    .venv/bin/python bench/inspect_bench.py memory [--rows 50000] [--d-sae 12288]

Both write a synthetic activation dataset into a temp folder (a ``manifest.json``, rows of
width 384 — MiniLM's — in 65,536-row ``.npy`` shards, token ids and positions of
128-token contexts); the rows are random, which changes nothing a pass costs.

``speed``: one process, side by side on the same rows (read back from the page cache
the same way): (1) the bare encoder pass — per 4096-row batch ``x @ W_enc + b_enc``
(``torch.addmm`` into a reused buffer) and the per-row top-k (``sparse_ops.topk_rows``,
the faster of the two top-k implementations here); (2) ``inspect_sae`` of the same TopK
SAE, top-N 20, everything included (statistics, reservoirs, the context pass, writing
``latents.jsonl``); then (1) again. Reports seconds and the ratio to the mean baseline.

``memory``: ``inspect_sae`` in a child process on datasets of ``--rows`` and 10× as
many rows, same SAE; reports each child's peak RSS (``VmHWM``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

D, CTX, SHARD = 384, 128, 65536


def make_dataset(root: Path, rows: int) -> Path:
    """A complete activation dataset of ``rows`` random rows (hook ``resid_post.3``)."""
    from saestudio.activations.manifest import HookInfo, Manifest, ShardInfo, write_manifest

    rng = np.random.default_rng(0)
    for sub in ("resid_post.3", "tokens", "positions"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shards = []
    for i, start in enumerate(range(0, rows, SHARD)):
        n = min(SHARD, rows - start)
        name = f"shard_{i:05d}"
        np.save(root / "resid_post.3" / f"{name}.npy", rng.standard_normal((n, D), np.float32))
        np.save(root / "tokens" / f"{name}.npy", rng.integers(0, 30522, n, dtype=np.int32))
        idx = np.arange(start, start + n)
        np.save(
            root / "positions" / f"{name}.npy",
            np.stack([idx // CTX, idx % CTX], 1).astype(np.int32),
        )
        shards.append(
            ShardInfo(
                name=name, rows=n, contexts=(start // CTX, (start + n) // CTX), token_sha256=""
            )
        )
    contexts = rows // CTX
    write_manifest(root, Manifest(
        complete=True, model="synthetic", model_dtype="float32",
        hooks={"resid_post.3": HookInfo(module="encoder.layer.3", capture="output", d=D)},
        storage_dtype="float32", context_length=CTX, prepend_bos=False, contexts=contexts,
        target_contexts=contexts, max_tokens=rows, rows=rows, dataset={"name": "synthetic"},
        exclude_special_tokens=False, special_token_ids=[], shard_contexts=SHARD // CTX,
        batch_size=1, shards=shards, stats={}, sums={}, created="", saestudio_version="bench",
    ))  # fmt: skip
    return root


def make_sae(d_sae: int, k: int):
    import torch

    from saestudio.sae import SAEConfig, build_sae

    torch.manual_seed(0)
    return build_sae(SAEConfig(architecture="topk", d_sae=d_sae, k=k).resolved(D)).eval()


def bare_pass(sae, acts: Path, batch: int) -> tuple[float, float]:
    """``x @ W_enc + b_enc`` and the per-row top-k of every row, as fast as this code base
    does it; returns (wall seconds, CPU seconds of this process)."""
    import torch

    from saestudio.activations.manifest import open_hook
    from saestudio.sae.sparse_ops import topk_rows

    ds = open_hook(acts, "resid_post.3")
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        pre = None
        for s in range(0, len(ds), batch):
            x = ds.read(s, min(len(ds), s + batch))
            if pre is None or pre.shape[0] != x.shape[0]:
                pre = torch.empty(x.shape[0], sae.d_sae)
            torch.addmm(sae.b_enc, x, sae.W_enc, out=pre)
            values, indices = topk_rows(pre, sae.cfg.k)
    return time.perf_counter() - t0, time.process_time() - c0


def cmd_speed(args: argparse.Namespace) -> None:
    import torch

    from saestudio.features import inspect_sae

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="inspect-bench-") as tmp:
        t = time.perf_counter()
        acts = make_dataset(Path(tmp) / "acts", args.rows)
        print(f"dataset: {args.rows:,} rows written in {time.perf_counter() - t:.0f} s", flush=True)
        sae = make_sae(args.d_sae, args.k)
        # the rows were just written: already in the page cache for every pass
        base1, cpu1 = bare_pass(sae, acts, 4096)
        print(f"bare encoder pass: {base1:.1f} s ({cpu1:.1f} CPU s)", flush=True)
        marks: dict[str, float] = {}
        t0, c0 = time.perf_counter(), time.process_time()

        def progress(done: int, total: int) -> None:
            if done == total:
                marks["main"] = time.perf_counter() - t0

        s = inspect_sae(sae, acts, Path(tmp) / "insp", hook="resid_post.3", top_n=20,
                        progress=progress)  # fmt: skip
        insp, insp_cpu = time.perf_counter() - t0, time.process_time() - c0
        size = (Path(tmp) / "insp" / "latents.jsonl").stat().st_size
        print(
            f"inspect: {insp:.1f} s ({insp_cpu:.1f} CPU s; main pass {marks['main']:.1f} s), "
            f"latents.jsonl {size / 1e6:.0f} MB",
            flush=True,
        )
        base2, cpu2 = bare_pass(sae, acts, 4096)
        print(f"bare encoder pass again: {base2:.1f} s ({cpu2:.1f} CPU s)", flush=True)
        base, base_cpu = (base1 + base2) / 2, (cpu1 + cpu2) / 2
        print(json.dumps({
            "rows": args.rows, "d_sae": args.d_sae, "k": args.k, "top_n": 20,
            "threads": args.threads, "bare_s": [round(base1, 2), round(base2, 2)],
            "bare_cpu_s": [round(cpu1, 2), round(cpu2, 2)], "inspect_s": round(insp, 2),
            "inspect_cpu_s": round(insp_cpu, 2), "inspect_main_pass_s": round(marks["main"], 2),
            "ratio": round(insp / base, 3), "ratio_cpu": round(insp_cpu / base_cpu, 3),
            "dead": s.dead,
        }))  # fmt: skip


def cmd_child(args: argparse.Namespace) -> None:
    import torch

    from saestudio.features import inspect_sae

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from side_by_side_workers import proc_status_mb

    torch.set_num_threads(args.threads)
    sae = make_sae(args.d_sae, args.k)
    t0 = time.perf_counter()
    inspect_sae(sae, args.acts, args.out, hook="resid_post.3", top_n=20)
    print(json.dumps({"peak_rss_mb": round(proc_status_mb("VmHWM"), 1),
                      "seconds": round(time.perf_counter() - t0, 1)}))  # fmt: skip


def cmd_memory(args: argparse.Namespace) -> None:
    results = {}
    with tempfile.TemporaryDirectory(prefix="inspect-bench-") as tmp:
        for rows in (args.rows, 10 * args.rows):
            acts = make_dataset(Path(tmp) / f"acts{rows}", rows)
            out = subprocess.run(
                [sys.executable, __file__, "child", "--acts", str(acts), "--out",
                 str(Path(tmp) / f"insp{rows}"), "--d-sae", str(args.d_sae), "--k", str(args.k),
                 "--threads", str(args.threads)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[rows] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{rows:>10,} rows: {results[rows]}", flush=True)
    small, large = results[args.rows], results[10 * args.rows]
    print(json.dumps({"rows": list(results), "peak_rss_mb": [r["peak_rss_mb"] for r in results.values()],
                      "difference_mb": round(large["peak_rss_mb"] - small["peak_rss_mb"], 1)}))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn, rows in (("speed", cmd_speed, 1_000_000), ("memory", cmd_memory, 50_000)):
        q = sub.add_parser(name)
        q.add_argument("--rows", type=int, default=rows)
        q.add_argument("--d-sae", type=int, default=12288)
        q.add_argument("--k", type=int, default=32)
        q.add_argument("--threads", type=int, default=1)
        q.set_defaults(func=fn)
    q = sub.add_parser("child")
    q.add_argument("--acts", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--d-sae", type=int, default=12288)
    q.add_argument("--k", type=int, default=32)
    q.add_argument("--threads", type=int, default=2)
    q.set_defaults(func=cmd_child)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
