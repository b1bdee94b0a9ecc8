"""Step time of one SAE training step (loss, backward, Adam), architectures interleaved.

    python bench/step_time.py [--d-in 384] [--d-sae 6144] [--batch-size 2048] [--k 32]
        [--steps 15] [--archs batchtopk matryoshka_batchtopk]

Times ``sae.loss`` (the sparse training path where the architecture has one), backward
and a fused Adam step on random sparse-mix inputs; the architectures take turns step by
step so that load from other processes hits them alike. Reports the median per step and
the ratio to the first architecture (issue 13: Matryoshka ≤ 1.3× BatchTopK).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from saestudio.sae import LossSettings, SAEConfig, build_sae


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--d-in", type=int, default=384)
    p.add_argument("--d-sae", type=int, default=6144)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--archs", nargs="+", default=["batchtopk", "matryoshka_batchtopk"])
    args = p.parse_args()
    torch.manual_seed(0)
    feats = torch.randn(4 * args.d_in, args.d_in)
    saes, opts = [], []
    for arch in args.archs:
        sae = build_sae(
            SAEConfig(architecture=arch, d_sae=args.d_sae, k=args.k).resolved(args.d_in)
        ).train()
        saes.append(sae)
        opts.append(torch.optim.Adam(sae.parameters(), lr=1e-4, fused=True))
    times: list[list[float]] = [[] for _ in args.archs]
    dead = torch.zeros(args.d_sae, dtype=torch.bool)
    dead[::50] = True  # a few dead latents: AuxK runs, as in a real run
    settings = LossSettings(dead_mask=dead, aux_k=args.d_in // 2, aux_coefficient=1 / 32)
    for step in range(args.steps + 2):
        codes = (torch.rand(args.batch_size, feats.shape[0]) < 0.01).float()
        x = codes @ feats
        for i, (sae, opt) in enumerate(zip(saes, opts, strict=True)):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            sae.loss(x, None, settings).loss.backward()
            sae.remove_parallel_decoder_grad()
            opt.step()
            sae.after_optimizer_step()
            if step >= 2:  # the first two steps warm the allocator and caches
                times[i].append(time.perf_counter() - t0)
    base = statistics.median(times[0])
    for arch, ts in zip(args.archs, times, strict=True):
        med = statistics.median(ts)
        print(f"{arch:>22}  median {1000 * med:7.1f} ms/step  ({med / base:.2f}× {args.archs[0]})")


if __name__ == "__main__":
    main()
