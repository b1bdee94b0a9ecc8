"""TrainConfig validation and the paper-grounded defaults ``resolve`` fills in (SPEC §2.A, §2.C)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from saestudio.sae.config import SAEConfig
from saestudio.training.config import TrainConfig, resolve


def _cfg(**kw: Any) -> TrainConfig:
    sae = kw.pop("sae", {})
    return TrainConfig.model_validate({"activations": "x.npy", "sae": sae, **kw})


# ---- refused at construction, naming the field -------------------------------------------------


BAD: list[tuple[str, dict[str, Any], list[str]]] = [
    ("k_gt_d_sae", {"sae": {"d_in": 16, "d_sae": 32, "k": 64}}, ["k", "d_sae (32)", "64"]),
    ("lr_zero", {"lr": 0}, ["lr", "greater than 0"]),
    ("lr_negative", {"lr": -1e-4}, ["lr", "greater than 0"]),
    ("unknown_architecture", {"sae": {"architecture": "resnet"}}, ["architecture", "topk"]),
    ("extra_key", {"learning_rate": 1e-3}, ["learning_rate", "extra"]),
    ("extra_sae_key", {"sae": {"width": 3}}, ["width", "extra"]),
    ("steps_and_tokens", {"steps": 10, "training_tokens": 1000}, ["steps", "training_tokens"]),
    (
        "l0_target_on_topk",
        {"sae": {"architecture": "topk"}, "l0_target": 30},
        ["l0_target", "JumpReLU"],
    ),
    ("grad_accum", {"batch_size": 64, "grad_accum_steps": 5}, ["grad_accum_steps", "64"]),
    ("transcoder_no_targets", {"sae": {"architecture": "transcoder"}}, ["targets"]),
    ("targets_on_sae", {"targets": "y.npy"}, ["targets", "transcoder"]),
    ("min_lr_ratio", {"min_lr_ratio": 1.5}, ["min_lr_ratio", "1"]),
]


@pytest.mark.parametrize(("case", "fields", "needles"), BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_refused_naming_the_field(
    case: str, fields: dict[str, Any], needles: list[str]
) -> None:
    with pytest.raises(ValidationError) as e:
        _cfg(**fields)
    text = str(e.value)
    for needle in needles:
        assert needle.lower() in text.lower(), f"{needle!r} not in {text}"


def test_config_is_frozen() -> None:
    cfg = _cfg(steps=10)
    with pytest.raises(ValidationError):
        cfg.steps = 20  # type: ignore[misc]


def test_k_larger_than_d_sae_is_refused_once_the_width_is_known() -> None:
    """d_in (hence d_sae) often comes from the data: then ``resolve`` refuses it."""
    cfg = _cfg(sae={"architecture": "topk", "expansion_factor": 2, "k": 40})
    with pytest.raises(ValueError, match=r"k: must be at most d_sae \(32\), got 40"):
        resolve(cfg, d_in=16, d_out=None)
    assert resolve(cfg, d_in=32, d_out=None).sae.d_sae == 64  # fine once wide enough


def test_total_steps_from_training_tokens() -> None:
    assert _cfg(training_tokens=10_000, batch_size=4096).total_steps == 3
    assert _cfg().total_steps == 2000


# ---- resolve: paper defaults ---------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_topk_lr_scales_with_inverse_sqrt_of_latents(arch: str) -> None:
    def lr(d_sae: int) -> float:
        return resolve(_cfg(sae={"architecture": arch, "d_sae": d_sae}), 2048, None).lr

    assert lr(16384) == pytest.approx(8e-4)  # 4× Gao et al.'s 2e-4 at 16k latents
    assert lr(65536) == pytest.approx(4e-4)
    assert lr(4096) == pytest.approx(1.6e-3)
    assert lr(1000) == pytest.approx(8e-4 / math.sqrt(1000 / 2**14))
    hp = resolve(_cfg(sae={"architecture": arch, "d_sae": 16384}), 2048, None)
    assert hp.adam_eps == pytest.approx(6.25e-10)


def test_explicit_lr_wins_over_the_default() -> None:
    hp = resolve(_cfg(lr=3e-3, sae={"architecture": "topk", "d_sae": 64}), 16, None)
    assert hp.lr == 3e-3


def test_jumprelu_defaults() -> None:
    hp = resolve(_cfg(sae={"architecture": "jumprelu"}), 64, None)
    assert hp.lr == pytest.approx(7e-5)
    assert hp.adam_beta1 == 0.0
    assert hp.adam_beta2 == pytest.approx(0.999)
    assert hp.normalize_activations == "unit_mean_squared_norm"
    # a jumprelu transcoder keeps JumpReLU's β1 = 0
    tc = _cfg(targets="y.npy", sae={"architecture": "transcoder", "activation": "jumprelu"})
    assert resolve(tc, 64, 32).adam_beta1 == 0.0


def test_standard_decay_and_lambda_warmup_fractions() -> None:
    hp = resolve(_cfg(steps=1000, sae={"architecture": "standard"}), 64, None)
    assert hp.lr == pytest.approx(4e-4)
    assert hp.lr_decay_steps == 200  # LR decay over the last 20 %
    assert hp.sparsity_warmup_steps == 50  # λ warm-up over the first 5 %
    assert (
        hp.normalize_activations == "none"
    )  # SAELens; Anthropic scaling lost on short runs (issue 13)
    # the decay belongs to the constant schedule; cosine/linear decay on their own
    assert (
        resolve(
            _cfg(steps=1000, lr_schedule="cosine", sae={"architecture": "standard"}), 64, None
        ).lr_decay_steps
        == 0
    )


def test_transcoder_defaults() -> None:
    cfg = _cfg(targets="y.npy", sae={"architecture": "transcoder"})
    hp = resolve(cfg, 64, 48)
    assert hp.sparsity_coefficient == pytest.approx(1.4e-4)
    assert hp.lr == pytest.approx(4e-4)
    assert (hp.sae.d_in, hp.sae.d_out, hp.sae.d_sae) == (64, 48, 8 * 64)


def test_aux_k_defaults_to_half_the_input_width() -> None:
    hp = resolve(_cfg(sae={"architecture": "topk", "d_sae": 256, "k": 8}), 64, None)
    assert hp.aux_k == 32
    assert resolve(_cfg(aux_k=0, sae={"architecture": "topk", "d_sae": 256}), 64, None).aux_k == 0


def test_resolve_fills_widths_from_the_data_and_checks_them() -> None:
    hp = resolve(_cfg(sae={"expansion_factor": 4}), 24, None)
    assert (hp.sae.d_in, hp.sae.d_sae, hp.sae.d_out) == (24, 96, 24)
    with pytest.raises(ValueError, match="d_in: config says 32"):
        resolve(_cfg(sae={"d_in": 32}), 24, None)


def test_explicit_values_are_kept_not_replaced_by_defaults() -> None:
    cfg = _cfg(
        steps=100,
        adam_beta1=0.5,
        sparsity_coefficient=2.0,
        sparsity_warmup_steps=0,
        lr_decay_steps=0,
        normalize_activations="none",
        sae={"architecture": "standard"},
    )
    hp = resolve(cfg, 16, None)
    assert (hp.adam_beta1, hp.sparsity_coefficient, hp.sparsity_warmup_steps) == (0.5, 2.0, 0)
    assert (hp.lr_decay_steps, hp.normalize_activations) == (0, "none")


def test_resolved_round_trips_through_json() -> None:
    hp = resolve(_cfg(steps=10, sae={"architecture": "jumprelu", "d_sae": 32}), 16, None)
    data = hp.to_json()
    assert SAEConfig.model_validate(data["sae"]) == hp.sae
    assert data["lr"] == hp.lr
