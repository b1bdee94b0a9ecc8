"""Activation extraction (SPEC §2.B, issue 3): exact, early-stopping, resumable, safe.

Random-weight GPT-2 / GPT-NeoX / Llama / Gemma / Gemma 2 models from tiny configs (with a
tiny character tokenizer saved beside them) and the real offline MiniLM go through the
whole ``extract`` path; what is stored is compared with the model's own
``output_hidden_states`` and with plain forward hooks on hand-named modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf

from saestudio.activations import extract as ex
from saestudio.activations.extract import (
    ExtractConfig,
    extract,
    load_model,
    open_activation_dataset,
    open_hook,
    open_tokens,
)
from saestudio.activations.hookpoints import HookError
from saestudio.activations.manifest import hook_folder
from saestudio.activations.store import DataError

MODULES = {
    "gpt2": ("transformer.h.1.attn", "transformer.h.1.mlp", "transformer.h.1.mlp"),
    "neox": ("gpt_neox.layers.1.attention", "gpt_neox.layers.1.mlp", "gpt_neox.layers.1.mlp"),
    "llama": ("model.layers.1.self_attn", "model.layers.1.mlp", "model.layers.1.mlp"),
    "gemma": ("model.layers.1.self_attn", "model.layers.1.mlp", "model.layers.1.mlp"),
    "gemma2": (  # sandwich norms: what is added to the residual stream is normalised
        "model.layers.1.post_attention_layernorm",
        "model.layers.1.post_feedforward_layernorm",
        "model.layers.1.mlp",
    ),
    "minilm": (
        "encoder.layer.1.attention.output.dense",
        "encoder.layer.1.output.dense",
        "encoder.layer.1.intermediate",
    ),
}
HOOKS = ["resid_post.0", "resid_pre.1", "resid_post.1", "attn_out.1", "mlp_out.1", "mlp_in.1"]


def cfg(model: str, out: Path, **kw) -> ExtractConfig:
    base = dict(
        model=model, dataset="demo:pydoc", hooks=["resid_post.1"], out=str(out),
        context_length=16, max_tokens=16 * 6, batch_size=4, shard_tokens=16 * 4, device="cpu",
    )  # fmt: skip
    return ExtractConfig(**(base | kw))


def stored(out: Path, hook: str) -> torch.Tensor:
    ds = open_hook(out, hook)
    return ds.read(0, len(ds))


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama", "gemma", "gemma2", "minilm"])
def test_stored_activations_equal_the_models_own(family: str, model_dirs, tmp_path: Path) -> None:
    out = tmp_path / "acts"
    m = extract(cfg(model_dirs[family], out, hooks=HOOKS), progress=False)
    assert m.complete and m.contexts == 6 and m.rows == 6 * 16
    assert [s.contexts for s in m.shards] == [(0, 4), (4, 6)]
    tokens, positions = open_tokens(out)
    ids = torch.from_numpy(tokens.astype(np.int64)).view(6, 16)
    assert (positions[:, 0] == np.repeat(np.arange(6), 16)).all()
    got = {h: stored(out, h) for h in HOOKS}

    model = load_model(model_dirs[family], "float32", "cpu")
    mods = dict(model.named_modules())
    attn, mlp, mlp_in = MODULES[family]
    ref: dict[str, list[torch.Tensor]] = {"attn": [], "mlp": [], "mlp_in": [], "hs1": [], "hs2": []}
    handles = [
        mods[attn].register_forward_hook(
            lambda _m, _i, o: ref["attn"].append(o[0] if isinstance(o, tuple) else o)
        ),
        mods[mlp].register_forward_hook(lambda _m, _i, o: ref["mlp"].append(o)),
        mods[mlp_in].register_forward_pre_hook(lambda _m, i: ref["mlp_in"].append(i[0])),
    ]
    with torch.no_grad():
        for batch in (ids[:4], ids[4:]):  # the extraction's batches
            hs = model(input_ids=batch, output_hidden_states=True).hidden_states
            ref["hs1"].append(hs[1])
            ref["hs2"].append(hs[2])
    for h in handles:
        h.remove()
    flat = {k: torch.cat(v).reshape(96, -1) for k, v in ref.items()}
    torch.testing.assert_close(got["resid_post.0"], flat["hs1"])  # hidden_states[L + 1]
    torch.testing.assert_close(got["resid_post.1"], flat["hs2"])
    assert torch.equal(got["resid_pre.1"], got["resid_post.0"])
    torch.testing.assert_close(got["attn_out.1"], flat["attn"])
    torch.testing.assert_close(got["mlp_out.1"], flat["mlp"])
    torch.testing.assert_close(got["mlp_in.1"], flat["mlp_in"])
    if family != "minilm":  # pre-LN: the residual stream is the sum of what the blocks add
        summed = got["resid_pre.1"] + got["attn_out.1"] + got["mlp_out.1"]
        torch.testing.assert_close(got["resid_post.1"], summed, rtol=1e-5, atol=1e-5)
    for h in HOOKS:  # norm statistics over every stored row
        x = got[h].double()
        assert m.stats[h].mean_squared_norm == pytest.approx(float((x * x).sum(1).mean()), rel=1e-6)
        assert m.stats[h].max_abs == pytest.approx(float(x.abs().max()))


def test_minilm_last_layer_is_the_models_output(model_dirs, tmp_path: Path) -> None:
    out = tmp_path / "acts"
    extract(cfg(model_dirs["minilm"], out, hooks=["resid_post.5"], max_tokens=32), progress=False)
    ids = torch.from_numpy(open_tokens(out)[0].astype(np.int64)).view(2, 16)
    model = load_model(model_dirs["minilm"], "float32", "cpu")
    assert type(model).__name__ == "BertModel"  # an encoder loads without an LM head
    with torch.no_grad():
        last = model(input_ids=ids).last_hidden_state.reshape(32, -1)
    torch.testing.assert_close(stored(out, "resid_post.5"), last)


# ---- early stop -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hooks", "runs"), [(["resid_post.0", "mlp_out.1"], (2, 2, 0)), (["resid_pre.1"], (2, 0, 0))]
)
def test_layers_after_the_last_hook_never_run(
    hooks: list[str],
    runs: tuple[int, ...],
    model_dirs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = [0, 0, 0]

    def counting_load(*args, **kwargs):
        model = load_model(*args, **kwargs)
        for i, layer in enumerate(model.transformer.h):  # the layer's body starts with ln_1
            layer.ln_1.register_forward_pre_hook(
                lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1)
            )
        return model

    monkeypatch.setattr(ex, "load_model", counting_load)
    extract(cfg(model_dirs["gpt2"], tmp_path / "acts", hooks=hooks), progress=False)
    # 2 batches, plus the one-step probe that measures each hook's width
    assert tuple(c - (1 if r else 0) for c, r in zip(calls, runs, strict=True)) == runs


# ---- resume -----------------------------------------------------------------------------------


def test_exclude_special_tokens_drops_exactly_those_rows(model_dirs, tmp_path: Path) -> None:
    c = cfg(model_dirs["minilm"], tmp_path / "all", hooks=["resid_post.0"], max_tokens=16 * 8)
    full = extract(c, progress=False)
    excl = extract(
        c.model_copy(update={"out": str(tmp_path / "excl"), "exclude_special_tokens": True}),
        progress=False,
    )
    specials = excl.special_token_ids
    tok_all, pos_all = open_tokens(tmp_path / "all")
    tok_ex, pos_ex = open_tokens(tmp_path / "excl")
    keep = ~np.isin(tok_all, specials)
    assert (~keep).sum() >= 8  # at least the CLS of every context
    assert not np.isin(tok_ex, specials).any()
    assert excl.rows == full.rows - (~keep).sum() == len(tok_ex)
    assert sum(s.rows for s in excl.shards) == excl.rows
    assert (tok_ex == tok_all[keep]).all() and (pos_ex == pos_all[keep]).all()
    # the model still saw the special tokens: the kept rows are unchanged
    torch.testing.assert_close(
        stored(tmp_path / "excl", "resid_post.0"),
        stored(tmp_path / "all", "resid_post.0")[torch.from_numpy(keep)],
    )


@pytest.mark.parametrize(("dtype", "suffix"), [("float16", ".npy"), ("bfloat16", ".safetensors")])
def test_storage_dtypes(dtype: str, suffix: str, model_dirs, tmp_path: Path) -> None:
    c = cfg(model_dirs["llama"], tmp_path / "f32", hooks=["resid_post.1"])
    extract(c, progress=False)
    m = extract(c.model_copy(update={"out": str(tmp_path / dtype), "dtype": dtype}), progress=False)
    files = sorted(p.name for p in (tmp_path / dtype / "resid_post.1").iterdir())
    assert files == [f"shard_00000{suffix}", f"shard_00001{suffix}"]
    x32 = stored(tmp_path / "f32", "resid_post.1")
    want = x32.to(getattr(torch, dtype)).float()
    assert torch.equal(stored(tmp_path / dtype, "resid_post.1"), want)
    sq = (want.double() ** 2).sum(1)
    assert m.stats["resid_post.1"].mean_squared_norm == pytest.approx(float(sq.mean()), rel=1e-6)
    assert m.stats["resid_post.1"].mean_norm == pytest.approx(float(sq.sqrt().mean()), rel=1e-6)


# ---- names and paths ---------------------------------------------------------------------------


def test_hook_names_cannot_escape_the_dataset_folder(model_dirs, tmp_path: Path) -> None:
    assert hook_folder("resid_post.3") == "resid_post.3"
    assert hook_folder("a/b") == "a_b"
    for bad in (
        "../x",
        "..",
        "a/../../b",
        "",
        ".hidden",
        "tokens",
        "positions",
        "a\x00b",
        "C:evil",
    ):
        with pytest.raises(HookError, match="cannot name a folder"):
            hook_folder(bad)
    with pytest.raises(HookError, match="cannot name a folder"):
        extract(cfg(model_dirs["gpt2"], tmp_path / "acts", hooks=["../../etc"]), progress=False)
    assert not (tmp_path / "acts").exists()
    # a hand-edited manifest cannot make open_hook read outside the dataset either
    extract(cfg(model_dirs["gpt2"], tmp_path / "ok"), progress=False)
    mpath = tmp_path / "ok" / "manifest.json"
    raw = json.loads(mpath.read_text())
    raw["hooks"]["../evil"] = raw["hooks"]["resid_post.1"]
    mpath.write_text(json.dumps(raw))
    with pytest.raises(HookError, match="cannot name a folder"):
        open_hook(tmp_path / "ok", "../evil")


def test_unknown_hooks_list_the_valid_names(model_dirs, tmp_path: Path) -> None:
    with pytest.raises(
        HookError, match=r"unknown hook 'resid_mid\.1'; valid names: resid_pre\.0, resid_post\.0"
    ):
        extract(cfg(model_dirs["neox"], tmp_path / "a", hooks=["resid_mid.1"]), progress=False)
    extract(
        cfg(model_dirs["neox"], tmp_path / "b", hooks=["resid_post.0", "mlp_out.0"]), progress=False
    )
    with pytest.raises(
        DataError, match=r"has no hook 'resid_post\.2'; it holds: resid_post\.0, mlp_out\.0"
    ):
        open_hook(tmp_path / "b", "resid_post.2")
    with pytest.raises(DataError, match="not an activation dataset"):
        open_hook(tmp_path / "a", "resid_post.0")


def test_raw_module_paths_and_refused_outputs(model_dirs, tmp_path: Path) -> None:
    m = extract(
        cfg(model_dirs["gpt2"], tmp_path / "raw", hooks=["transformer.h.0.mlp.c_fc"]),
        progress=False,
    )
    assert m.hooks["transformer.h.0.mlp.c_fc"].d == 4 * 32
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not an activation dataset"):
        extract(cfg(model_dirs["gpt2"], tmp_path / "busy"), progress=False)
    with pytest.raises(ValueError, match="exceeds the model's 64 positions"):
        extract(
            cfg(model_dirs["gpt2"], tmp_path / "long", context_length=128, max_tokens=128),
            progress=False,
        )


def test_model_loading(model_dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    assert type(load_model(model_dirs["gpt2"], "bfloat16", "cpu")).__name__ == "GPT2LMHeadModel"
    assert (
        next(load_model(model_dirs["gpt2"], "bfloat16", "cpu").parameters()).dtype == torch.bfloat16
    )
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_model("./not/here")

    def offline(*_a, **_k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nmore")

    monkeypatch.setattr(tf.AutoConfig, "from_pretrained", offline)
    with pytest.raises(FileNotFoundError, match=r"cannot load 'gpt2' .*couldn't connect") as e:
        load_model("gpt2")
    assert "\n" not in str(e.value)


# ---- the command line ----------------------------------------------------------------------------


def test_overflow_of_the_storage_dtype_is_refused(
    model_dirs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def huge(*args, **kwargs):  # activations far beyond float16's 65504
        model = load_model(*args, **kwargs)
        with torch.no_grad():
            model.transformer.wte.weight.mul_(1e7)
        return model

    monkeypatch.setattr(ex, "load_model", huge)
    c = cfg(model_dirs["gpt2"], tmp_path / "acts", hooks=["resid_pre.0"], dtype="float16")
    with pytest.raises(DataError, match=r"resid_pre\.0: non-finite activations in contexts 0–4"):
        extract(c, progress=False)
    assert not open_activation_dataset(tmp_path / "acts").complete
