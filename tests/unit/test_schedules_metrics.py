"""Learning-rate / λ schedules (SPEC §2.C) and the metric definitions of SPEC §3."""

from __future__ import annotations

import math

import pytest
import torch

from saestudio.training.metrics import density_histogram, log_sparsity, reconstruction_metrics
from saestudio.training.schedules import lr_at, sparsity_at

LR, T = 1e-3, 100


def _curve(schedule: str, **kw: float) -> list[float]:
    return [lr_at(s, lr=LR, total_steps=T, schedule=schedule, **kw) for s in range(T)]  # type: ignore[arg-type]


# ---- learning rate ----------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_warmup_ramps_linearly_from_near_zero_to_lr(schedule: str) -> None:
    lrs = _curve(schedule, warmup_steps=10)
    assert lrs[0] == pytest.approx(LR / 10)
    assert lrs[9] == pytest.approx(LR)
    steps = [b - a for a, b in zip(lrs[:10], lrs[1:10], strict=False)]
    assert steps == pytest.approx([LR / 10] * 9)
    assert max(lrs) == pytest.approx(LR)


def test_constant_with_decay_holds_then_falls_to_the_floor() -> None:
    lrs = _curve("constant", decay_steps=20, min_lr_ratio=0.1)
    assert lrs[:80] == [LR] * 80
    assert lrs[-1] == pytest.approx(0.1 * LR)
    tail = lrs[79:]
    assert all(b < a for a, b in zip(tail, tail[1:], strict=False))  # strictly falling
    assert lrs[90] == pytest.approx(LR + (0.1 * LR - LR) * 11 / 20)  # linear


def test_constant_without_decay_stays_at_lr() -> None:
    assert _curve("constant") == [LR] * T


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("ratio", [0.0, 0.25])
def test_decaying_schedules_end_at_the_floor(schedule: str, ratio: float) -> None:
    lrs = _curve(schedule, warmup_steps=10, min_lr_ratio=ratio)
    assert lrs[-1] == pytest.approx(ratio * LR, abs=1e-12)
    after = lrs[9:]
    assert all(b <= a for a, b in zip(after, after[1:], strict=False))
    assert min(lrs[10:]) >= ratio * LR - 1e-15


def test_cosine_is_half_way_at_the_middle_of_the_decay() -> None:
    lrs = _curve("cosine", min_lr_ratio=0.0)
    assert lrs[49] == pytest.approx(LR / 2)  # frac = 50/100 → cos(π/2) = 0
    assert lrs[24] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * 0.25)))


def test_onecycle_peaks_at_30_percent() -> None:
    lrs = _curve("onecycle", min_lr_ratio=0.0)
    assert max(range(T), key=lrs.__getitem__) == 29
    assert lrs[29] == pytest.approx(LR)
    assert lrs[0] == pytest.approx(LR / 30)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_unknown_schedule_names_the_field() -> None:
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_at(50, lr=LR, total_steps=T, schedule="exponential")


# ---- sparsity coefficient -------------------------------------------------------------------


def test_sparsity_warmup_ramps_to_the_coefficient() -> None:
    lam = [sparsity_at(s, coefficient=5.0, warmup_steps=5) for s in range(8)]
    assert lam == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])
    assert sparsity_at(0, coefficient=5.0, warmup_steps=0) == 5.0


# ---- reconstruction metrics (SPEC §3) ------------------------------------------------------------


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dimensions with very different means: where the seed's flattened formula goes wrong."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g) + torch.tensor([10.0, -10.0, 0.0, 5.0, 0.0, -3.0])
    x_hat = x + 0.5 * torch.randn(32, 6, generator=g)
    z = torch.relu(torch.randn(32, 12, generator=g))
    return x, x_hat, z


def test_fvu_is_squared_error_over_per_dimension_variance() -> None:
    x, x_hat, z = _case()
    m = reconstruction_metrics(x, x_hat, z)
    sq = ((x - x_hat) ** 2).sum()
    by_hand = sq / ((x - x.mean(dim=0)) ** 2).sum()
    torch.testing.assert_close(m["fvu"], by_hand)
    torch.testing.assert_close(m["explained_variance"], 1 - by_hand)
    torch.testing.assert_close(m["mse"], ((x - x_hat) ** 2).sum(dim=1).mean())
    torch.testing.assert_close(m["mse_per_element"], ((x - x_hat) ** 2).mean())

    seed_ev = 1 - (x - x_hat).var() / x.var()  # erratum 1: variance of the flattened tensor
    assert float(seed_ev) > 0.99  # looks near-perfect because of the between-dimension spread
    assert abs(float(m["explained_variance"]) - float(seed_ev)) > 0.1


def test_perfect_reconstruction_and_predicting_the_mean() -> None:
    x, _, z = _case()
    perfect = reconstruction_metrics(x, x.clone(), z)
    assert float(perfect["fvu"]) == pytest.approx(0.0, abs=1e-7)
    assert float(perfect["explained_variance"]) == pytest.approx(1.0)
    mean = reconstruction_metrics(x, x.mean(dim=0, keepdim=True).expand_as(x), z)
    assert float(mean["fvu"]) == pytest.approx(1.0, rel=1e-5)
    assert float(mean["explained_variance"]) == pytest.approx(0.0, abs=1e-5)


def test_l0_and_l1_by_hand() -> None:
    z = torch.tensor([[0.0, 2.0, -1.0, 0.0], [0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    x = torch.randn(3, 2)
    m = reconstruction_metrics(x, x, z)
    assert float(m["l0"]) == pytest.approx((2 + 1 + 0) / 3)
    assert float(m["l1"]) == pytest.approx((3.0 + 0.5 + 0.0) / 3)


def test_metrics_of_half_precision_inputs_are_computed_in_float32() -> None:
    x, x_hat, z = _case()
    m16 = reconstruction_metrics(x.bfloat16(), x_hat.bfloat16(), z.bfloat16())
    m32 = reconstruction_metrics(x.bfloat16().float(), x_hat.bfloat16().float(), z)
    assert m16["fvu"].dtype == torch.float32
    torch.testing.assert_close(m16["fvu"], m32["fvu"])


# ---- feature density ------------------------------------------------------------------------


def test_density_histogram_counts_every_latent_once() -> None:
    d_sae, tokens = 64, 10_000
    fires = torch.randint(0, tokens + 1, (d_sae,))
    fires[:5] = 0  # dead: first bin (log10 freq clamped at -10)
    fires[5:9] = tokens  # fire on every token: log10 1 = 0, the last bin
    hist = density_histogram(fires, tokens)
    assert sum(hist["counts"]) == d_sae
    assert len(hist["edges"]) == len(hist["counts"]) + 1
    assert hist["edges"][0] == -10.0 and hist["edges"][-1] == 0.0
    assert hist["counts"][0] >= 5
    assert hist["counts"][-1] >= 4


def test_log_sparsity_is_log10_firing_frequency() -> None:
    fires = torch.tensor([0, 10, 1000])
    got = log_sparsity(fires, 1000)
    torch.testing.assert_close(got[1:], torch.tensor([-2.0, 0.0]))
    assert float(got[0]) == pytest.approx(-10.0)
