"""The sparse training paths compute the same function as the plain dense ones (issue 6
"Done means" 5): loss, every term, z, and every parameter's gradient, on fresh random
inputs each run (the seed is printed on failure)."""

from __future__ import annotations

import pytest
import torch

from saestudio.sae import LossSettings, SAEConfig, build_sae, sparse_ops
from saestudio.sae.base import SparseAutoencoder
from saestudio.training.metrics import latent_metrics, reconstruction_metrics


def _fresh() -> tuple[torch.Generator, int]:
    seed = int(torch.randint(0, 2**31, ()))
    return torch.Generator().manual_seed(seed), seed


def _perturbed(cfg: SAEConfig, g: torch.Generator) -> SparseAutoencoder:
    sae = build_sae(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return sae


def _grads(sae: SparseAutoencoder, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}


ARCHS = {
    "topk": ({"architecture": "topk"}, None),
    # wide enough for sparse_ops.topk_rows to select by chunks (96 chunks of 8)
    "topk_wide": ({"architecture": "topk"}, None),
    "batchtopk_wide": ({"architecture": "batchtopk"}, None),  # sparse_ops.topk_flat chunks
    "batchtopk": ({"architecture": "batchtopk"}, None),
    "topk_skip_transcoder": (
        {"architecture": "transcoder", "activation": "topk", "skip": True},
        20,
    ),
    "batchtopk_transcoder": ({"architecture": "transcoder", "activation": "batchtopk"}, 28),
}


@pytest.mark.parametrize("dead", ["none_dead", "few_dead", "many_dead", "no_auxk"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_sparse_loss_equals_dense_loss(arch: str, dead: str) -> None:
    g, seed = _fresh()
    spec, d_out = ARCHS[arch]
    d_sae, k = (768, 8) if arch.endswith("_wide") else (96, 6)
    cfg = SAEConfig(**spec, k=k, d_sae=d_sae).resolved(24, d_out)
    sae = _perturbed(cfg, g)
    x = torch.randn(37, 24, generator=g)
    target = None if d_out is None else torch.randn(37, d_out, generator=g)
    mask = {
        "none_dead": torch.zeros(d_sae, dtype=torch.bool),
        "few_dead": torch.randperm(d_sae, generator=g) < 5,  # searched column by column
        "many_dead": torch.rand(d_sae, generator=g) < 0.6,  # masked top-k over all latents
        "no_auxk": None,
    }[dead]
    settings = LossSettings(dead_mask=mask, aux_k=11, aux_coefficient=0.0 if mask is None else 0.3)
    sae.train()
    state = {k: v.clone() for k, v in sae.state_dict().items()}
    fast = sae.loss(x, target, settings)
    assert fast.out.z.is_sparse, "the training step should take the sparse path"
    g_fast = _grads(sae, fast.loss)
    sae.load_state_dict(state)  # BatchTopK's threshold EMA moved: start from the same state
    plain = SparseAutoencoder.loss(sae, x, target, settings)
    g_plain = _grads(sae, plain.loss)
    msg = f"seed {seed}"
    torch.testing.assert_close(fast.loss, plain.loss, msg=msg)
    assert fast.terms.keys() == plain.terms.keys()
    for name in plain.terms:
        torch.testing.assert_close(fast.terms[name], plain.terms[name], msg=f"{name}, {msg}")
    torch.testing.assert_close(fast.out.x_hat, plain.out.x_hat, msg=msg)
    torch.testing.assert_close(fast.out.z.to_dense(), plain.out.z, msg=msg)
    assert g_fast.keys() == g_plain.keys()
    for name in g_plain:
        torch.testing.assert_close(g_fast[name], g_plain[name], msg=f"∂{name}, {msg}")
    if arch.startswith("batchtopk"):  # the inference threshold follows the same batches
        sae.load_state_dict(state)
        sae.loss(x, target, settings)
        after_fast = sae.threshold_ema.clone()
        sae.load_state_dict(state)
        SparseAutoencoder.loss(sae, x, target, settings)
        torch.testing.assert_close(after_fast, sae.threshold_ema, msg=msg)


def test_eval_mode_and_no_grad_stay_dense() -> None:
    cfg = SAEConfig(architecture="topk", k=4, d_sae=40).resolved(12)
    sae = build_sae(cfg)
    x = torch.randn(9, 12)
    sae.eval()
    assert not sae.loss(x, None, LossSettings()).out.z.is_sparse
    sae.train()
    with torch.no_grad():
        assert not sae.loss(x, None, LossSettings()).out.z.is_sparse


def test_primitives_match_dense_products() -> None:
    g, seed = _fresh()
    batch, d_in, d_sae, d_out = 21, 10, 50, 7
    x = torch.randn(batch, d_in, generator=g, requires_grad=True)
    W_enc = torch.randn(d_in, d_sae, generator=g, requires_grad=True)
    b_enc = torch.randn(d_sae, generator=g, requires_grad=True)
    W_dec = torch.randn(d_sae, d_out, generator=g, requires_grad=True)
    # a ragged selection (BatchTopK-like), some rows empty, some latents repeated across rows
    flat = torch.randperm(batch * d_sae, generator=g)[:60]
    flat = flat[(flat // d_sae) % 4 != 1]
    active, perm = sparse_ops.from_flat(flat, batch, d_sae)
    assert torch.equal(active.rows, torch.sort(active.rows).values)

    pre = x @ W_enc + b_enc
    plan = sparse_ops.column_plan(active, d_sae)
    picked = sparse_ops.gather_preacts(
        x, W_enc, b_enc, active, plan, pre.detach()[active.rows, active.cols]
    )
    vals = picked.tanh()  # any differentiable use of the picked values
    out = sparse_ops.coo_decode(active, plan, vals, W_dec)
    z = torch.zeros(batch, d_sae).index_put(
        (active.rows, active.cols), pre[active.rows, active.cols].tanh()
    )
    ref = z @ W_dec
    torch.testing.assert_close(out, ref, msg=f"seed {seed}")
    w = torch.randn(batch, d_out, generator=g)
    params = (x, W_enc, b_enc, W_dec)
    ga = torch.autograd.grad((out * w).sum(), params)
    gb = torch.autograd.grad((ref * w).sum(), params)
    for name, a, b in zip(("x", "W_enc", "b_enc", "W_dec"), ga, gb, strict=True):
        torch.testing.assert_close(a, b, msg=f"∂{name}, seed {seed}")
    # the latents tensor and the metrics read from it
    zs = sparse_ops.to_sparse_latents(active, vals, d_sae)
    torch.testing.assert_close(zs.to_dense(), z.detach())
    torch.testing.assert_close(sparse_ops.fire_counts(zs, d_sae), sparse_ops.fire_counts(z, d_sae))
    for k, v in latent_metrics(z.detach()).items():
        torch.testing.assert_close(latent_metrics(zs)[k], v, msg=k)
    t = torch.randn(batch, d_out, generator=g)
    dense_m = reconstruction_metrics(t, ref.detach(), z.detach())
    sparse_m = reconstruction_metrics(t, ref.detach(), zs)
    for k in dense_m:
        torch.testing.assert_close(sparse_m[k], dense_m[k], msg=k)


@pytest.mark.parametrize(
    "batch,d,k",
    [(64, 12288, 32), (33, 3072, 32), (17, 768, 8), (9, 4096, 1), (5, 100, 3), (6, 500, 40)],
)
@pytest.mark.parametrize("values", ["normal", "ties", "masked"])
@pytest.mark.parametrize("over", ["rows", "batch"])
def test_chunked_topk_equals_torch_topk(batch: int, d: int, k: int, values: str, over: str) -> None:
    """The chunked top-k picks the same values as torch.topk (indices may differ only
    among exact ties), and each index points at its value: per row (TopK) and over the
    whole batch (BatchTopK, k·batch of them)."""
    g, seed = _fresh()
    x = torch.randn(batch, d, generator=g)
    if values == "ties":  # few distinct values: the k-th value is tied across chunks
        x = torch.randint(0, 4, (batch, d), generator=g).float()
    elif values == "masked":  # AuxK-style: most entries -inf
        x = x.masked_fill(torch.rand(batch, d, generator=g) < 0.9, float("-inf"))
    msg = f"seed {seed}"
    if over == "rows":
        got_v, got_i = sparse_ops.topk_rows(x, k)
        want_v, _ = x.topk(k, dim=-1)
        assert got_v.shape == got_i.shape == (batch, k)
        torch.testing.assert_close(x.gather(1, got_i), got_v, msg=msg)
    else:
        got_v, got_i = sparse_ops.topk_flat(x, k * batch)
        want_v, _ = x.flatten().topk(k * batch)
        torch.testing.assert_close(x.flatten()[got_i], got_v, msg=msg)
        got_v, got_i, want_v = got_v.unsqueeze(0), got_i.unsqueeze(0), want_v.unsqueeze(0)
    torch.testing.assert_close(got_v.sort(-1, descending=True).values, want_v, msg=msg)
    assert (got_i.sort(-1).values.diff(dim=-1) > 0).all(), f"an index picked twice, {msg}"


def test_parallel_decoder_grad_removed_for_rows_of_any_norm() -> None:
    g, seed = _fresh()
    cfg = SAEConfig(architecture="topk", k=4, d_sae=40).resolved(12)
    sae = build_sae(cfg)
    with torch.no_grad():  # rows off unit norm (as after an optimizer step)
        sae.W_dec.mul_(torch.rand(40, 1, generator=g) * 3 + 0.1)
    grad = torch.randn(40, 12, generator=g)
    sae.W_dec.grad = grad.clone()
    sae.remove_parallel_decoder_grad()
    w = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    want = grad - (grad * w).sum(1, keepdim=True) * w
    torch.testing.assert_close(sae.W_dec.grad, want, msg=f"seed {seed}")
    torch.testing.assert_close((sae.W_dec.grad * w).sum(1), torch.zeros(40), msg=f"seed {seed}")


def test_fire_counts_ignore_zero_values() -> None:
    """A TopK pick whose ReLU'd value is 0 did not fire (as `z != 0` on the dense z)."""
    active = sparse_ops.per_row(torch.tensor([[0, 3], [3, 1]]))
    zs = sparse_ops.to_sparse_latents(active, torch.tensor([0.0, 2.0, 1.0, 0.0]), 5)
    assert sparse_ops.fire_counts(zs, 5).tolist() == [0, 0, 0, 2, 0]


@pytest.mark.parametrize(
    "spec,d_out",
    [
        ({"architecture": "standard"}, None),
        ({"architecture": "standard_anthropic"}, None),  # b_dec subtracted: ∂x flows to b_dec
        ({"architecture": "transcoder", "skip": True}, 13),  # ReLU transcoder with W_skip
    ],
)
def test_fused_relu_l1_loss_equals_plain(spec: dict, d_out: int | None) -> None:
    g, seed = _fresh()
    cfg = SAEConfig(**spec, d_sae=70).resolved(19, d_out)
    sae = _perturbed(cfg, g)
    x = torch.randn(41, 19, generator=g)
    target = None if d_out is None else torch.randn(41, d_out, generator=g)
    settings = LossSettings(sparsity_coefficient=float(torch.rand((), generator=g)) * 3)
    sae.train()
    fast = sae.loss(x, target, settings)
    g_fast = _grads(sae, fast.loss)
    plain = SparseAutoencoder.loss(sae, x, target, settings)
    g_plain = _grads(sae, plain.loss)
    msg = f"seed {seed}"
    torch.testing.assert_close(fast.loss, plain.loss, msg=msg)
    for name in plain.terms:
        torch.testing.assert_close(fast.terms[name], plain.terms[name], msg=f"{name}, {msg}")
    torch.testing.assert_close(fast.out.x_hat, plain.out.x_hat, msg=msg)
    torch.testing.assert_close(fast.out.z, plain.out.z, msg=msg)
    assert g_fast.keys() == g_plain.keys()
    for name in g_plain:
        torch.testing.assert_close(g_fast[name], g_plain[name], msg=f"∂{name}, {msg}")


def test_topk_biases_start_from_the_data_mean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """TopK starts with b_dec = E[x] and b_enc = −E[x]·W_enc: centred pre-activations."""
    import numpy as np

    from saestudio.training import TrainConfig
    from saestudio.training.trainer import Trainer

    g, seed = _fresh()
    rows = torch.randn(3000, 12, generator=g) + 4.0 * torch.randn(12, generator=g)
    np.save(tmp_path / "x.npy", rows.numpy())
    cfg = TrainConfig.model_validate(
        {
            "activations": str(tmp_path / "x.npy"),
            "sae": {"architecture": "topk", "d_sae": 48, "k": 4},
            "steps": 2,
            "batch_size": 64,
            "out": str(tmp_path / "run"),
        }
    )
    run = Trainer(cfg).runs[0]
    sample = run.prepare({run.input_name: Trainer(cfg).source.sample_rows(run.input_name)})[0]
    torch.testing.assert_close(run.sae.b_dec.detach(), sample.mean(0), msg=f"seed {seed}")
    pre = run.sae.pre_activations(sample).detach()
    torch.testing.assert_close(pre.mean(0), torch.zeros(48), atol=1e-4, rtol=0)
