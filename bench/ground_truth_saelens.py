"""Ground-truth benchmark: SAE Studio vs SAELens on SAELens's own synthetic data.

    python bench/ground_truth_saelens.py [--configs small zipf] [--seeds 0 1]
        [--archs standard jumprelu topk batchtopk matryoshka_batchtopk]
        [--samples 400000] [--batch-size 1024] [--json out.json]

For each data configuration × seed, ``sae_lens.synthetic.SyntheticModel`` (hierarchical,
low-rank-correlated, Zipfian-firing features with a bias — a constant offset) draws one
set of training rows. Both libraries train on exactly those rows, in the same order, with
the same batch size and number of samples, each with its own training loop and defaults:

- SAE Studio: ``saestudio.training.train`` at the architecture's defaults (only the
  width, and k where the architecture has one, are set).
- SAELens: its ``SAETrainer`` (as ``sae_lens.synthetic.train_toy_sae`` sets it up) with
  the architecture's default training config and lr 3e-4 (SynthSAEBench's value).

JumpReLU is compared at matched L0: SAELens's JumpReLU at its defaults first, then SAE
Studio's with ``l0_target`` = the L0 SAELens reached. Both are scored by
``sae_lens.synthetic.eval_sae_on_synthetic_data`` on fresh samples (SAE Studio's export is
loaded with ``sae_lens.SAE.load_from_disk``): MCC, uniqueness, precision, recall, F1,
explained variance, L0, dead latents.

sae-lens is a bench/dev dependency only; SAE Studio never imports it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

CONFIGS: dict[str, dict[str, Any]] = {
    # 512 features in 64 dims, trees of depth 2, Zipfian firing, low-rank correlations
    "small": {
        "num_features": 512,
        "hidden_dim": 64,
        "zipf": {"exponent": 0.5, "max_prob": 0.2, "min_prob": 0.004},
        "hierarchy": {"total_root_nodes": 32, "branching_factor": 4, "max_depth": 2},
        "correlation": {"rank": 16, "correlation_scale": 0.1},
        "d_sae": 512,
        "k": 12,
    },
    # more features than dims ×12, steeper Zipf, mutually exclusive children
    "zipf": {
        "num_features": 768,
        "hidden_dim": 64,
        "zipf": {"exponent": 1.0, "max_prob": 0.3, "min_prob": 0.002},
        "hierarchy": {
            "total_root_nodes": 48,
            "branching_factor": 3,
            "max_depth": 2,
            "mutually_exclusive_portion": 0.5,
        },
        "correlation": {"rank": 16, "correlation_scale": 0.2},
        "d_sae": 768,
        "k": 10,
    },
}
DATA_SEED_BASE = 7919
ARCHS = ("standard", "jumprelu", "topk", "batchtopk", "matryoshka_batchtopk")


def synthetic_model(name: str, seed: int) -> Any:
    from sae_lens.synthetic import SyntheticModel, ZipfianFiringProbabilityConfig
    from sae_lens.synthetic.hierarchy import HierarchyConfig
    from sae_lens.synthetic.synthetic_model import (
        LowRankCorrelationConfig,
        SyntheticModelConfig,
    )

    c = CONFIGS[name]
    # SyntheticModel seeds torch's global RNG with its seed while it draws the feature
    # vectors (randn [num_features, hidden_dim]); SAE Studio seeds the same RNG with the
    # run's seed (0) before drawing its decoder (randn [d_sae, d_in]). With equal seeds
    # and d_sae = num_features the decoder *is* the ground truth at step 0 (MCC 1.000
    # after one step, seen here). The data's seeds are kept far from any run seed.
    seed = DATA_SEED_BASE + seed
    cfg = SyntheticModelConfig(
        num_features=c["num_features"],
        hidden_dim=c["hidden_dim"],
        firing_probability=ZipfianFiringProbabilityConfig(**c["zipf"]),
        hierarchy=HierarchyConfig(**c["hierarchy"]),
        correlation=LowRankCorrelationConfig(**c["correlation"], seed=seed),
        std_firing_magnitudes=0.2,
        mean_firing_magnitudes=1.0,
        seed=seed,
    )
    return SyntheticModel(cfg)


class RowIterator(Iterator[torch.Tensor]):
    """The saved training rows, in order, as SAELens's trainer reads batches."""

    def __init__(self, rows: torch.Tensor, batch_size: int):
        self.rows, self.batch_size, self.pos = rows, batch_size, 0

    def __next__(self) -> torch.Tensor:
        if self.pos + self.batch_size > len(self.rows):
            self.pos = 0
        batch = self.rows[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch


def train_saelens(arch: str, rows: torch.Tensor, c: dict[str, Any], batch: int) -> Any:
    from sae_lens import (
        BatchTopKTrainingSAEConfig,
        JumpReLUTrainingSAEConfig,
        MatryoshkaBatchTopKTrainingSAEConfig,
        StandardTrainingSAEConfig,
        TopKTrainingSAEConfig,
    )
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.sae import TrainingSAE
    from sae_lens.training.sae_trainer import SAETrainer

    from saestudio.sae.config import default_matryoshka_widths

    d_in, d_sae, k = rows.shape[1], c["d_sae"], c["k"]
    cfgs = {
        "standard": lambda: StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae),
        "jumprelu": lambda: JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=d_sae),
        "topk": lambda: TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k),
        "batchtopk": lambda: BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k),
        "matryoshka_batchtopk": lambda: MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=d_in, d_sae=d_sae, k=k, matryoshka_widths=list(default_matryoshka_widths(d_sae))
        ),
    }
    sae = TrainingSAE.from_dict(cfgs[arch]().to_dict())
    trainer_cfg = SAETrainerConfig(  # as sae_lens.synthetic.train_toy_sae sets it up
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        total_training_samples=len(rows),
        device="cpu",
        autocast=False,
        lr=3e-4,
        lr_end=3e-4,
        lr_scheduler_name="constant",
        lr_warm_up_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        lr_decay_steps=0,
        n_restart_cycles=1,
        train_batch_size_samples=batch,
        dead_feature_window=1000,
        feature_sampling_window=2000,
        logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1),
        n_batches_for_norm_estimate=1000,
    )
    SAETrainer(
        cfg=trainer_cfg,
        sae=sae,
        data_provider=RowIterator(rows, batch),
        save_checkpoint_fn=lambda _path: None,
    ).fit()
    return sae


def train_ours(
    arch: str, rows_path: Path, c: dict[str, Any], batch: int, samples: int, out: Path,
    l0_target: float | None = None,
) -> Any:  # fmt: skip
    from sae_lens import SAE

    from saestudio.training import TrainConfig, train

    sae: dict[str, Any] = {"architecture": arch, "d_sae": c["d_sae"]}
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        sae["k"] = c["k"]
    cfg = TrainConfig(
        activations=str(rows_path),
        sae=sae,
        l0_target=l0_target,
        steps=samples // batch,
        batch_size=batch,
        eval_tokens=1,  # the training rows are the benchmark's; scoring uses fresh samples
        eval_every=10**9,
        checkpoint_every=0,
        log_every=100,
        out=str(out),
        device="cpu",
    )
    res = train(cfg)
    return SAE.load_from_disk(str(res.sae_path))


def score(sae: Any, model: Any, n: int) -> dict[str, float]:
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    with torch.no_grad():
        r = eval_sae_on_synthetic_data(
            sae, model.feature_dict, model.activation_generator, num_samples=n, batch_size=4096
        )
    cl = r.classification
    return {
        "mcc": float(r.mcc),
        "uniqueness": float(r.uniqueness),
        "precision": float(cl.precision),
        "recall": float(cl.recall),
        "f1": float(cl.f1_score),
        "ev": float(r.explained_variance),
        "l0": float(r.sae_l0),
        "dead": int(r.dead_latents),
    }


def report(paths: list[Path]) -> str:
    """A markdown table from ``--json`` files: one row per configuration × seed ×
    architecture, SAE Studio / SAELens side by side (later files override earlier rows)."""
    rows: dict[tuple, dict[str, dict]] = {}
    for path in paths:
        for r in json.loads(path.read_text()):
            rows.setdefault((r["config"], r["seed"], r["arch"]), {})[r["lib"]] = r
    keys = ("mcc", "f1", "uniqueness", "precision", "recall", "ev", "l0", "dead")
    out = [
        "| config | seed | arch | " + " | ".join(keys) + " |",
        "|---|---|---|" + "---:|" * len(keys),
    ]
    for (config, seed, arch), libs in rows.items():
        ours, theirs = libs.get("saestudio"), libs.get("saelens")
        if not (ours and theirs):
            continue
        cells = []
        for k in keys:
            fmt = "{:.0f}" if k == "dead" else "{:.1f}" if k == "l0" else "{:.3f}"
            cells.append(f"{fmt.format(ours[k])} / {fmt.format(theirs[k])}")
        out.append(f"| {config} | {seed} | {arch} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--report", nargs="+", type=Path, help="print the table of --json files")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--archs", nargs="+", default=list(ARCHS))
    p.add_argument("--samples", type=int, default=400_000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--eval-samples", type=int, default=50_000)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.report:
        print(report(args.report))
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for name in args.configs:
        for seed in args.seeds:
            model = synthetic_model(name, seed)
            torch.manual_seed(1000 + seed)
            with torch.no_grad():
                rows = model.sample(args.samples + 1).float()  # +1: SAE Studio's held-out row
            with tempfile.TemporaryDirectory() as tmp:
                rows_path = Path(tmp) / "rows.npy"
                np.save(rows_path, rows.numpy())
                train_rows = rows[: args.samples]
                for arch in args.archs:
                    t0 = time.perf_counter()
                    theirs = train_saelens(arch, train_rows, CONFIGS[name], args.batch_size)
                    t_theirs = time.perf_counter() - t0
                    s_theirs = score(theirs, model, args.eval_samples)
                    target = s_theirs["l0"] if arch == "jumprelu" else None
                    t0 = time.perf_counter()
                    ours = train_ours(
                        arch, rows_path, CONFIGS[name], args.batch_size, args.samples,
                        Path(tmp) / arch, l0_target=target,
                    )  # fmt: skip
                    t_ours = time.perf_counter() - t0
                    s_ours = score(ours, model, args.eval_samples)
                    for lib, s, t in (
                        ("saestudio", s_ours, t_ours),
                        ("saelens", s_theirs, t_theirs),
                    ):
                        row = {"config": name, "seed": seed, "arch": arch, "lib": lib, **s,
                               "train_s": round(t, 1)}  # fmt: skip
                        results.append(row)
                        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
