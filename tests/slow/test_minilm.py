"""Real activations (issue 3 "Done means" 5): a transcoder trained on the offline MiniLM's
layer-3 MLP input → output pairs over real English text explains most of the variance."""

from __future__ import annotations

from pathlib import Path

import pytest

from saestudio.activations.extract import ExtractConfig, extract
from saestudio.demo import demo_model_dir
from saestudio.sae.saelens_load import load_saelens
from saestudio.training import TrainConfig, train

pytestmark = pytest.mark.slow


def test_minilm_transcoder_mlp_in_to_mlp_out(tmp_path: Path) -> None:
    acts = tmp_path / "acts"
    extract(
        ExtractConfig(
            model=demo_model_dir(),
            dataset="demo:pydoc",
            hooks=["mlp_in.3", "mlp_out.3"],
            out=str(acts),
            context_length=128,
            max_tokens=65536,
            exclude_special_tokens=True,
        ),
        progress=False,
    )
    cfg = TrainConfig.model_validate(
        {
            "activations": str(acts),
            "hook": "mlp_in.3",
            "target_hook": "mlp_out.3",
            "sae": {
                "architecture": "transcoder",
                "activation": "topk",
                "k": 32,
                "expansion_factor": 4,
            },
            "steps": 600,
            "batch_size": 512,
            "lr": 1e-3,
            "out": str(tmp_path / "tc"),
            "log_every": 50,
        }
    )
    result = train(cfg)
    assert result.eval["eval_fvu"] < 0.5, result.eval
    sae = load_saelens(result.sae_path)
    assert (sae.d_in, sae.d_out, sae.d_sae) == (384, 384, 1536)
    import json

    meta = json.loads((result.sae_path / "cfg.json").read_text())["metadata"]
    assert (meta["hook_name"], meta["hook_name_out"]) == ("mlp_in.3", "mlp_out.3")
