"""BatchTopK's inference threshold θ: the plain running mean of each batch's smallest kept
activation over the first 1/(1 − β) batches, an EMA after; older checkpoints (no count)
keep moving at the EMA's rate."""

from __future__ import annotations

import torch

from saestudio.sae import SAEConfig, build_sae
from saestudio.sae.batchtopk import THRESHOLD_EMA_BETA, BatchTopKSAE


def _sae() -> BatchTopKSAE:
    sae = build_sae(SAEConfig(architecture="batchtopk", k=2, d_sae=16).resolved(8))
    assert isinstance(sae, BatchTopKSAE)
    return sae


def test_early_threshold_is_the_running_mean_of_the_batches_seen() -> None:
    sae = _sae()
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    smallest = torch.rand(50, generator=g) + 0.1
    for i, v in enumerate(smallest):
        # kept activations whose smallest positive value is v (zeros are not "kept")
        sae._update_threshold(torch.stack([v + 1, v, torch.tensor(0.0), v + 3]))
        torch.testing.assert_close(sae.threshold_ema, smallest[: i + 1].mean(), msg=f"batch {i}")
    # a batch that kept nothing positive changes neither θ nor its count
    before = sae.threshold_ema.clone()
    sae._update_threshold(torch.zeros(5))
    assert torch.equal(sae.threshold_ema, before) and int(sae.threshold_steps) == 50


def test_after_the_warm_up_it_is_an_ema() -> None:
    sae = _sae()
    sae.threshold_ema.fill_(0.5)
    sae.threshold_steps.fill_(5000)
    sae._update_threshold(torch.tensor([1.5]))
    want = THRESHOLD_EMA_BETA * 0.5 + (1 - THRESHOLD_EMA_BETA) * 1.5
    torch.testing.assert_close(sae.threshold_ema, torch.tensor(want))


def test_a_checkpoint_without_the_count_keeps_its_threshold_settled() -> None:
    old = _sae().state_dict()
    old.pop("threshold_steps")  # as saved before the count existed
    old["threshold_ema"] = torch.tensor(0.5)
    sae = _sae()
    sae.load_state_dict(old)  # strict: the missing count is filled in, not an error
    sae._update_threshold(torch.tensor([1.5]))
    want = THRESHOLD_EMA_BETA * 0.5 + (1 - THRESHOLD_EMA_BETA) * 1.5
    torch.testing.assert_close(sae.threshold_ema, torch.tensor(want))
