"""Trainer behaviours a user relies on: determinism, gradient accumulation, decoder-norm
constraints, best-checkpoint choice and retention, pause, normalisation folded on export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saestudio.sae.saelens_load import load_saelens
from saestudio.training import TrainConfig, TrainerCallback, train
from saestudio.training.metrics import reconstruction_metrics


def _cfg(acts: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict = {
        "activations": str(acts),
        "sae": {"architecture": "topk", "k": 4, "d_sae": 64},
        "steps": 60,
        "batch_size": 64,
        "log_every": 10,
        "out": str(out),
    }
    base.update(kw)
    return TrainConfig.model_validate(base)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "sae_weights.safetensors")


def test_same_seed_same_sae_other_seed_different(small_acts: Path, tmp_path: Path) -> None:
    train(_cfg(small_acts, tmp_path / "a", seed=3))
    train(_cfg(small_acts, tmp_path / "b", seed=3))
    train(_cfg(small_acts, tmp_path / "c", seed=4))
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    torch.testing.assert_close(a["W_dec"], b["W_dec"], rtol=0, atol=0)
    assert not torch.allclose(a["W_dec"], c["W_dec"])


def test_gradient_accumulation_matches_full_batch(small_acts: Path, tmp_path: Path) -> None:
    sae = {"architecture": "standard", "d_sae": 64}
    train(_cfg(small_acts, tmp_path / "full", sae=sae))
    train(_cfg(small_acts, tmp_path / "accum", sae=sae, grad_accum_steps=4))
    full, accum = _weights(tmp_path / "full"), _weights(tmp_path / "accum")
    for k in full:
        torch.testing.assert_close(accum[k], full[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("arch", "unit"),
    [("topk", True), ("jumprelu", True), ("standard_anthropic", True), ("standard", False)],
)
def test_decoder_norms_per_architecture(
    small_acts: Path, tmp_path: Path, arch: str, unit: bool
) -> None:
    """Unit-norm decoders stay unit norm through training (erratum 5); the SAELens-style
    standard SAE is unconstrained and pays for norm through its weighted L1 instead."""
    cfg = _cfg(
        small_acts,
        tmp_path,
        sae={"architecture": arch, "d_sae": 64},
        normalize_activations="none",
        lr=3e-3,
    )
    result = train(cfg)
    from saestudio.training.export import sae_from_checkpoint

    sae, _ = sae_from_checkpoint(result.checkpoint)
    norms = sae.W_dec.detach().norm(dim=1)
    if unit:
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=1e-5, atol=1e-5)
    else:
        assert norms.std() > 1e-3  # rows drifted apart from their common 0.1 init


class _Pause(TrainerCallback):
    def __init__(self, at: int):
        self.at, self.step = at, 0

    def on_step(self, step: int) -> None:
        self.step = step

    def should_pause(self) -> bool:
        return self.step >= self.at


def test_best_checkpoint_and_retention(small_acts: Path, tmp_path: Path) -> None:
    result = train(_cfg(small_acts, tmp_path, steps=100, checkpoint_every=10, keep_checkpoints=2))
    root = tmp_path / "checkpoints"
    kept = sorted(p.name for p in root.glob("step_*"))
    best = json.loads((root / "best.json").read_text())
    # best + the last two, nothing else
    assert set(kept) == {best["path"], "step_00000090", "step_00000100"}
    # best really is the lowest held-out loss of the checkpoints still on disk
    losses = {p: json.loads((root / p / "state.json").read_text())["eval_loss"] for p in kept}
    assert losses[best["path"]] == min(losses.values())
    assert result.checkpoint == root / "step_00000100"


def test_pause_writes_a_checkpoint_and_no_export(small_acts: Path, tmp_path: Path) -> None:
    result = train(_cfg(small_acts, tmp_path), [_Pause(25)])
    assert (result.status, result.step) == ("paused", 25)
    assert (tmp_path / "checkpoints" / "step_00000025" / "state.json").is_file()
    assert not (tmp_path / "sae_weights.safetensors").exists()
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]  # the lines logged so far, none beyond the pause
    state = json.loads((tmp_path / "checkpoints" / "step_00000025" / "state.json").read_text())
    assert state["step"] == 25 and state["data_position"] == 25 * 64


@pytest.mark.parametrize("mode", ["expected_average_only_in", "unit_mean_squared_norm"])
def test_normalisation_is_folded_into_the_export(tmp_path: Path, mode: str) -> None:
    """Trained on scaled inputs, the exported SAE takes raw activations: its FVU on the
    raw held-out rows equals the trainer's held-out FVU."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 16)) * 7.0 + 3.0).astype(np.float32)  # far from unit scale
    np.save(tmp_path / "x.npy", x)
    result = train(
        _cfg(
            tmp_path / "x.npy",
            tmp_path / "run",
            normalize_activations=mode,
            sae={"architecture": "standard", "d_sae": 64},
            eval_tokens=300,
        )
    )
    sae = load_saelens(result.sae_path)
    held_out = torch.from_numpy(x[-300:])
    with torch.no_grad():
        out = sae(held_out)
    fvu = float(reconstruction_metrics(held_out, out.x_hat, out.z)["fvu"])
    assert fvu == pytest.approx(result.eval["eval_fvu"], abs=1e-4)
    assert (
        json.loads((tmp_path / "run" / "cfg.json").read_text())["normalize_activations"] == "none"
    )


def test_sweep_trains_each_sae_as_if_alone(small_acts: Path, tmp_path: Path) -> None:
    """A sweep over k (one stream, one read per batch) gives the same SAEs and metrics as
    training each k alone with the same seed."""
    job = train(_cfg(small_acts, tmp_path / "job", sweep="k=2,6"))
    assert set(job.saes) == {"k=2", "k=6"}
    for k in (2, 6):
        alone = tmp_path / f"alone{k}"
        train(_cfg(small_acts, alone, sae={"architecture": "topk", "k": k, "d_sae": 64}))
        joint = tmp_path / "job" / f"k={k}"
        assert json.loads((joint / "cfg.json").read_text())["k"] == k
        wa, wb = _weights(alone), _weights(joint)
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=0)

        def lines(p: Path) -> list[dict]:
            rows = [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]
            return [
                {k: v for k, v in r.items() if k not in ("sae", "tokens_per_s", "time")}
                for r in rows
            ]

        assert lines(joint) == lines(alone)


def test_sweep_of_sparsity_coefficient_orders_l0(small_acts: Path, tmp_path: Path) -> None:
    result = train(
        _cfg(
            small_acts,
            tmp_path,
            sae={"architecture": "jumprelu", "d_sae": 64},
            sweep={"sparsity_coefficient": [1e-4, 3e-2]},
            lr=4e-3,
            steps=80,
        )
    )
    l0 = {
        label: json.loads((tmp_path / label / "metrics.jsonl").read_text().splitlines()[-1])
        for label in result.saes
    }
    assert l0["sparsity_coefficient=0.03"]["eval_l0"] < l0["sparsity_coefficient=0.0001"]["eval_l0"]


def test_cli_resumes_a_many_sae_job(small_acts: Path, tmp_path: Path) -> None:
    from saestudio.cli import main

    args = [
        "train",
        "--activations",
        str(small_acts),
        "--architecture",
        "topk",
        "--d-sae",
        "32",
        "--sweep",
        "k=2,4",
        "--steps",
        "40",
        "--batch-size",
        "64",
        "--quiet",
        "--checkpoint-every",
        "20",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    import shutil

    for label in ("k=2", "k=4"):  # as if killed after the step-20 checkpoints
        shutil.rmtree(tmp_path / "b" / label / "checkpoints" / "step_00000040")
        (tmp_path / "b" / label / "sae_weights.safetensors").unlink()
    assert main(["train", "--resume", str(tmp_path / "b"), "--quiet"]) == 0
    for label in ("k=2", "k=4"):
        wa = _weights(tmp_path / "a" / label)
        wb = _weights(tmp_path / "b" / label)
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name])
