"""Training from an activation dataset keeps memory bounded (issue 3 "Done means" 4):
peak RSS of the same training on a dataset 12× larger — and far larger than the shuffle
buffer — stays the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saestudio.activations.manifest import FORMAT

D = 256
SHARD_ROWS = 32768  # 32 MB of float32 per shard

CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
from saestudio.training import TrainConfig, train

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
base = hwm()
cfg = TrainConfig.model_validate(json.loads(sys.argv[1]))
train(cfg)
print(json.dumps({"base": base, "peak": hwm()}))
"""


def _fake_dataset(root: Path, shards: int) -> Path:
    """A valid activation dataset of ``shards`` × 32,768 random rows (no model needed)."""
    rng = np.random.default_rng(0)
    (root / "resid_post.0").mkdir(parents=True)
    (root / "tokens").mkdir()
    (root / "positions").mkdir()
    infos = []
    for i in range(shards):
        name = f"shard_{i:05d}"
        np.save(
            root / "resid_post.0" / f"{name}.npy",
            rng.standard_normal((SHARD_ROWS, D), dtype=np.float32),
        )
        np.save(root / "tokens" / f"{name}.npy", np.zeros(SHARD_ROWS, np.int32))
        np.save(root / "positions" / f"{name}.npy", np.zeros((SHARD_ROWS, 2), np.int32))
        ctx = SHARD_ROWS // 128
        infos.append(
            {
                "name": name,
                "rows": SHARD_ROWS,
                "contexts": [i * ctx, (i + 1) * ctx],
                "token_sha256": "0" * 64,
            }
        )
    rows = shards * SHARD_ROWS
    stats = {"mean_norm": 16.0, "mean_squared_norm": 256.0, "max_abs": 5.0}
    manifest = {
        "format": FORMAT,
        "complete": True,
        "model": "fake",
        "model_dtype": "float32",
        "hooks": {"resid_post.0": {"module": "h.0", "capture": "output", "d": D}},
        "storage_dtype": "float32",
        "context_length": 128,
        "prepend_bos": True,
        "contexts": rows // 128,
        "target_contexts": rows // 128,
        "max_tokens": rows,
        "rows": rows,
        "dataset": {"name": "fake"},
        "exclude_special_tokens": False,
        "special_token_ids": [],
        "shard_contexts": SHARD_ROWS // 128,
        "batch_size": 32,
        "shards": infos,
        "stats": {"resid_post.0": stats},
        "sums": {
            "resid_post.0": {
                "rows": rows,
                "norm": 16.0 * rows,
                "squared_norm": 256.0 * rows,
                "max_abs": 5.0,
            }
        },
        "created": "2026-01-01T00:00:00",
        "saestudio_version": "test",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _peak_growth(dataset: Path, out: Path) -> int:
    cfg = {
        "activations": str(dataset),
        "hook": "resid_post.0",
        "out": str(out),
        "sae": {"architecture": "topk", "k": 8, "d_sae": 512},
        "steps": 120,
        "batch_size": 1024,
        "shuffle_buffer_rows": 8192,
        "shuffle_block_rows": 1024,
        "log_every": 40,
        "checkpoint_every": 0,
        "downstream_contexts": 0,
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return res["peak"] - res["base"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_does_not_grow_with_dataset_size(tmp_path: Path) -> None:
    small = _fake_dataset(tmp_path / "small", shards=1)  # 32 MB
    large = _fake_dataset(tmp_path / "large", shards=12)  # 384 MB, 48× the shuffle buffer
    grow_small = _peak_growth(small, tmp_path / "run_small")
    grow_large = _peak_growth(large, tmp_path / "run_large")
    # the same work on a 12× larger dataset: the peak must not follow the data's size
    # 64 MB of slack for allocator noise (seen: +43 MB once in CI); a read that kept the
    # data would add a good part of the 352 MB the large dataset has more
    assert grow_large < grow_small + 64, f"peak grew {grow_small} MB → {grow_large} MB"
    # and stays well below the data (the rest is torch, the SAE, Adam and the allocator:
    # 229-246 MB before issue 13's data-mean centring and evaluation metrics, 255-298 MB
    # after; a read that held the data would pass 384)
    assert grow_large < 340, f"training a 384 MB dataset grew RSS by {grow_large} MB"
