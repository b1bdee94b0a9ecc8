"""Activations with a known answer: sparse non-negative mixes of a random dictionary.

Used by the ground-truth tests, the demo and the benchmarks: an SAE trained on these
should find the dictionary's directions among its decoder rows; a transcoder trained on
(inputs, targets) pairs should find the map from one dictionary to the other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class GroundTruth(NamedTuple):
    x: np.ndarray  # [n, d] float32 inputs
    dictionary: np.ndarray  # [n_features, d] unit-norm true input directions
    y: np.ndarray | None  # [n, d_out] paired targets (transcoders)
    dictionary_out: np.ndarray | None  # [n_features, d_out] unit-norm true output directions


def _unit_rows(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    w = torch.randn(n, d, generator=g)
    return w / w.norm(dim=1, keepdim=True)


def make_ground_truth(
    n: int,
    d: int = 128,
    n_features: int = 512,
    active: int = 4,
    noise: float = 0.01,
    seed: int = 0,
    d_out: int | None = None,
    linear: torch.Tensor | None = None,
    min_coef: float = 0.5,
    max_coef: float = 2.0,
) -> GroundTruth:
    """``n`` rows, each a non-negative mix of ``active`` random unit directions + noise.

    With ``d_out``, also targets ``y = codes @ dictionary_out (+ x @ linear.T)``: the same
    sparse codes seen through a second dictionary, plus an optional dense linear part.
    Coefficients are uniform in [min_coef, max_coef]; with min_coef 0 some features fire
    weakly, which is what makes a sparsity penalty trade reconstruction against L0.
    """
    g = torch.Generator().manual_seed(seed)
    dictionary = _unit_rows(n_features, d, g)
    dict_out = _unit_rows(n_features, d_out, g) if d_out else None
    xs, ys = [], []
    for start in range(0, n, 8192):  # chunks keep the dense codes small
        rows = min(8192, n - start)
        idx = torch.rand(rows, n_features, generator=g).topk(active, dim=1).indices
        coef = torch.rand(rows, active, generator=g) * (max_coef - min_coef) + min_coef
        codes = torch.zeros(rows, n_features).scatter_(1, idx, coef)
        x = codes @ dictionary + noise * torch.randn(rows, d, generator=g)
        xs.append(x)
        if dict_out is not None:
            y = codes @ dict_out
            if linear is not None:
                y = y + x @ linear.T
            ys.append(y)
    y_all = torch.cat(ys).numpy().astype(np.float32) if ys else None
    return GroundTruth(
        torch.cat(xs).numpy().astype(np.float32),
        dictionary.numpy(),
        y_all,
        None if dict_out is None else dict_out.numpy(),
    )


def recovered_fraction(
    true_dirs: np.ndarray | torch.Tensor, W_dec: torch.Tensor, threshold: float = 0.9
) -> float:
    """Fraction of true directions whose best cosine with a decoder row is ≥ ``threshold``."""
    t = torch.as_tensor(true_dirs, dtype=torch.float32)
    t = t / t.norm(dim=1, keepdim=True)
    w = W_dec.detach().float().cpu()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best = (t @ w.T).max(dim=1).values
    return float((best >= threshold).float().mean())
