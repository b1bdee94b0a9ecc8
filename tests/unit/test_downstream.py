"""Downstream metric (SPEC §2.C, issue 3 item 7): CE loss recovered and KL with an SAE
spliced into a causal LM, on tiny random-weight GPT-2 and Llama models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from saestudio.activations.downstream import DownstreamResult, evaluate_downstream
from saestudio.activations.hookpoints import HookError
from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.config import SAEConfig
from saestudio.sae.registry import build_sae

D, VOCAB, SEQ = 32, 100, 12


@pytest.fixture(scope="module")
def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2, n_embd=D, n_head=2, vocab_size=VOCAB, n_positions=32,
        bos_token_id=0, eos_token_id=0, activation_function="relu", initializer_range=0.2,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        num_hidden_layers=2, hidden_size=D, intermediate_size=64, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=32,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.2,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (4, SEQ), generator=torch.Generator().manual_seed(1))


def identity_sae(d: int = D) -> SparseAutoencoder:
    """A real ReLU SAE whose reconstruction is exact: ReLU(x) − ReLU(−x) = x."""
    sae = build_sae(SAEConfig(architecture="standard", d_in=d, d_sae=2 * d, d_out=d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))  # [d_in, 2·d_in]
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))  # [2·d_in, d_in]
    return sae


def zero_sae() -> SparseAutoencoder:
    sae = build_sae(SAEConfig(architecture="standard", d_in=D, d_sae=2 * D, d_out=D))
    for p in sae.parameters():
        nn.init.zeros_(p)
    return sae


def random_sae(seed: int = 0) -> SparseAutoencoder:
    torch.manual_seed(seed)
    return build_sae(SAEConfig(architecture="topk", d_in=D, d_sae=4 * D, d_out=D, k=4))


MODEL_HOOKS = [
    ("gpt2", "resid_pre.1"),  # a block's input: forward pre-hook
    ("gpt2", "resid_post.0"),  # a block's output
    ("gpt2", "mlp_out.1"),
    ("gpt2", "attn_out.0"),  # the attention module returns a tuple
    ("llama", "resid_pre.1"),
    ("llama", "resid_post.1"),
    ("llama", "mlp_out.0"),
]


@pytest.mark.parametrize(("which", "hook"), MODEL_HOOKS)
def test_identity_sae_recovers_all_and_zero_sae_none(
    request: pytest.FixtureRequest, ids: torch.Tensor, which: str, hook: str
) -> None:
    model = request.getfixturevalue(which)
    exact = evaluate_downstream(model, identity_sae(), hook, ids)
    assert exact.ce_loss_recovered == 1.0
    assert exact.ce_spliced == exact.ce_clean
    assert exact.kl_spliced == pytest.approx(0.0, abs=1e-7)
    # the splice site really is on the forward path: zeroing it costs loss
    assert exact.kl_zero > 1e-4
    assert exact.ce_zero_ablated != exact.ce_clean
    assert exact.tokens == ids.shape[0] * (SEQ - 1)

    none = evaluate_downstream(model, zero_sae(), hook, ids)
    assert none.ce_loss_recovered == 0.0
    assert none.kl_spliced == none.kl_zero
    assert none.ce_clean == exact.ce_clean


def test_clean_loss_matches_the_model_own_loss_with_padding(gpt2: GPT2LMHeadModel) -> None:
    ids = torch.randint(0, VOCAB, (3, SEQ), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # right padding
    mask[2, 4:] = 0
    res = evaluate_downstream(gpt2, identity_sae(), "resid_post.0", ids, mask, batch_size=2)
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        ref = gpt2(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert res.tokens == int(mask[:, 1:].sum())
    assert res.ce_clean == pytest.approx(float(ref), rel=1e-5)


def test_random_sae_lands_finite_and_batching_does_not_matter(
    gpt2: GPT2LMHeadModel, ids: torch.Tensor
) -> None:
    sae = random_sae()
    one = evaluate_downstream(gpt2, sae, "resid_post.0", ids, batch_size=1)
    all_ = evaluate_downstream(gpt2, sae, "resid_post.0", ids, batch_size=8)
    assert isinstance(one, DownstreamResult)
    assert all(math.isfinite(v) for v in one)
    assert one.ce_spliced != one.ce_clean and one.kl_spliced > 0
    torch.testing.assert_close(torch.tensor(one[:-1]), torch.tensor(all_[:-1]))


def test_input_and_output_captures_of_the_same_stream_agree(
    gpt2: GPT2LMHeadModel, ids: torch.Tensor
) -> None:
    # resid_pre.1 (block 1's input) is resid_post.0 (block 0's output)
    sae = random_sae(1)
    pre = evaluate_downstream(gpt2, sae, "resid_pre.1", ids)
    post = evaluate_downstream(gpt2, sae, "resid_post.0", ids)
    torch.testing.assert_close(torch.tensor(pre), torch.tensor(post))


def test_transcoder_that_is_the_mlp_recovers_everything(
    gpt2: GPT2LMHeadModel, ids: torch.Tensor
) -> None:
    # GPT-2 MLP with ReLU: c_proj(relu(c_fc(x))) — exactly a ReLU transcoder mlp_in → mlp_out
    mlp = gpt2.transformer.h[0].mlp
    tc = build_sae(SAEConfig(architecture="transcoder", d_in=D, d_sae=4 * D, d_out=D))
    with torch.no_grad():
        tc.W_enc.copy_(mlp.c_fc.weight)  # Conv1D weights are [in, out], like ours
        tc.b_enc.copy_(mlp.c_fc.bias)
        tc.W_dec.copy_(mlp.c_proj.weight)
        tc.b_dec.copy_(mlp.c_proj.bias)
    res = evaluate_downstream(gpt2, tc, "mlp_in.0", ids, target_hook="mlp_out.0")
    assert res.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert res.kl_spliced == pytest.approx(0.0, abs=1e-6)
    assert res.kl_zero > 1e-4  # zeroing the MLP matters, so the check above can fail

    torch.manual_seed(3)
    rand = build_sae(SAEConfig(architecture="transcoder", d_in=D, d_sae=4 * D, d_out=D))
    res = evaluate_downstream(gpt2, rand, "mlp_in.0", ids, target_hook="mlp_out.0")
    assert math.isfinite(res.ce_loss_recovered) and res.ce_spliced != res.ce_clean
    with pytest.raises(ValueError, match="transcoder needs target_hook"):
        evaluate_downstream(gpt2, rand, "mlp_in.0", ids)


def test_constant_norm_rescale_feeds_the_sae_rows_of_norm_sqrt_d(
    gpt2: GPT2LMHeadModel, ids: torch.Tensor
) -> None:
    sae = identity_sae()
    norms: list[torch.Tensor] = []
    sae.register_forward_pre_hook(lambda _m, args: norms.append(args[0].norm(dim=-1)))
    res = evaluate_downstream(gpt2, sae, "resid_post.0", ids, normalize="constant_norm_rescale")
    torch.testing.assert_close(torch.cat(norms), torch.full((ids.numel(),), math.sqrt(D)))
    # the factor is divided back out: still (up to rounding) the identity
    assert res.ce_loss_recovered == pytest.approx(1.0, abs=1e-5)


def test_model_and_sae_modes_are_restored(gpt2: GPT2LMHeadModel, ids: torch.Tensor) -> None:
    sae = random_sae().train()
    gpt2.train()
    try:
        evaluate_downstream(gpt2, sae, "resid_post.0", ids[:1])
        assert gpt2.training and sae.training
    finally:
        gpt2.eval()


def test_encoder_models_and_bad_inputs_are_refused(
    gpt2: GPT2LMHeadModel, ids: torch.Tensor
) -> None:
    bert = BertModel(
        BertConfig(
            hidden_size=D,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=VOCAB,
        )  # fmt: skip
    )
    with pytest.raises(ValueError, match="CE loss needs a causal LM; BertModel has no LM head"):
        evaluate_downstream(bert, identity_sae(), "resid_post.0", ids)
    with pytest.raises(HookError, match="unknown hook"):
        evaluate_downstream(gpt2, identity_sae(), "resid_mid.0", ids)
    with pytest.raises(ValueError, match="SAE's d_in is 16"):
        evaluate_downstream(gpt2, identity_sae(16), "resid_post.0", ids)
