"""Shared fixtures: small real activation files written to tmp folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from saestudio.activations.synthetic import GroundTruth, make_ground_truth


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    # CI has 2 cores; more threads only thrash
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ground_truth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GroundTruth]:
    """100k rows in 128 dims: sparse (4 of 512) non-negative mixes of unit directions."""
    gt = make_ground_truth(100_000, d=128, n_features=512, active=4, noise=0.01, seed=0)
    path = tmp_path_factory.mktemp("gt") / "x.npy"
    np.save(path, gt.x)
    return path, gt


@pytest.fixture
def small_acts(tmp_path: Path) -> Path:
    """4,000 × 16 synthetic activations for fast trainer tests."""
    gt = make_ground_truth(4000, d=16, n_features=48, active=3, seed=1)
    path = tmp_path / "acts.npy"
    np.save(path, gt.x)
    return path
