"""The side-by-side benchmark's workers: one process per library, each in its own venv
(SAE Studio from the project's, SAELens and sparsify from ``bench/.venv-ref``), started
by ``bench/side_by_side.py`` as ``side_by_side.py worker``. Each trains on the same
batches with its library's real training step and answers the coordinator's commands
(train N steps, timed; eval; quit) on stdin/stdout, one JSON line each."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out" / "side_by_side"
BATCH = 4096


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


def proc_status_mb(field: str = "VmHWM") -> float:
    """A memory field of this process (``VmHWM``: peak RSS; ``VmRSS``: RSS now), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
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
                "lr": c.get("ours_lr") or (None if c["arch"] in ("topk", "batchtopk") else c["lr"]),
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
        elif c["arch"] == "batchtopk":
            self.sae = sae_lens.BatchTopKTrainingSAE(
                sae_lens.BatchTopKTrainingSAEConfig(k=c["k"], **common)
            )
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

            peak = proc_status_mb()  # of training, before the evaluation allocates anything
            x = torch.from_numpy(np.load(OUT / "eval.npy"))
            parts = [w.evaluate(chunk) for chunk in x.split(2048)]  # sums, not means: see _sums
            err = sum(p[0] for p in parts)
            fvu = err / float((x - x.mean(0)).pow(2).sum())
            l0 = sum(p[1] for p in parts) / len(x)
            reply({"fvu": fvu, "l0": l0, "peak_rss_mb": peak, "steps": batches.i})
        elif cmd["cmd"] == "quit":
            reply({"bye": True})
            return
