"""The fast paths compute the same function as the plain ones (issue 6 "Done means" 5):
values and gradients, fresh random inputs every run."""

from __future__ import annotations

import pytest
import torch

from saestudio.sae import LossSettings, SAEConfig, build_sae
from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.topk import auxk_loss, sparse_decode


def _plain_auxk(
    sae: SparseAutoencoder,
    target: torch.Tensor,
    x_hat: torch.Tensor,
    pre: torch.Tensor,
    dead: torch.Tensor,
    k_aux: int,
) -> torch.Tensor:
    residual = (target - x_hat).detach()
    masked = pre.masked_fill(~dead, float("-inf"))
    values, indices = masked.topk(k_aux, dim=-1, sorted=False)
    z_aux = torch.zeros_like(pre).scatter_(-1, indices, values.relu())
    err = (z_aux @ sae.W_dec - residual).pow(2).sum(-1).mean()
    return err / (residual - residual.mean(0)).pow(2).sum(-1).mean()


@pytest.mark.parametrize("skip", [False, True])
def test_topk_sparse_forward_equals_dense(skip: bool) -> None:
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))  # fresh every run
    arch = (
        {"architecture": "transcoder", "activation": "topk", "skip": True}
        if skip
        else {"architecture": "topk"}
    )
    cfg = SAEConfig(**arch, k=7, d_sae=96).resolved(24, 20 if skip else None)
    fast = build_sae(cfg)
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    x = torch.randn(33, 24, generator=g)
    target = torch.randn(33, cfg.d_out, generator=g)
    out = fast(x)
    # the plain path: dense z through the base class
    plain = SparseAutoencoder.forward(fast, x)
    torch.testing.assert_close(out.x_hat, plain.x_hat)
    torch.testing.assert_close(out.z, plain.z)
    grads = []  # gradients of the same loss through each path
    for o in (out, plain):
        fast.zero_grad()
        (o.x_hat - target).pow(2).sum().backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in fast.named_parameters() if p.grad is not None})
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_sparse_decode_and_auxk_match_dense() -> None:
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    sae = build_sae(SAEConfig(architecture="topk", k=5, d_sae=80).resolved(16))
    idx = torch.randint(0, 80, (12, 5), generator=g)
    vals = torch.rand(12, 5, generator=g)
    dense = torch.zeros(12, 80).scatter_add_(-1, idx, vals) @ sae.W_dec
    torch.testing.assert_close(sparse_decode(idx, vals, sae.W_dec), dense)

    x = torch.randn(40, 16, generator=g)
    dead = torch.rand(80, generator=g) < 0.5
    out = sae(x)
    settings = LossSettings(dead_mask=dead, aux_k=8, aux_coefficient=1 / 32)
    fast = auxk_loss(sae, x, out, settings)
    plain = _plain_auxk(sae, x, out.x_hat, out.pre_acts, dead, 8)
    torch.testing.assert_close(fast, plain)
    gf = torch.autograd.grad(fast, sae.W_dec, retain_graph=True)[0]
    gp = torch.autograd.grad(plain, sae.W_dec)[0]
    torch.testing.assert_close(gf, gp)
