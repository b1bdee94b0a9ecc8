"""SAELens-format export/import (SPEC §2.D), checked against the real sae-lens 6.x.

Every exportable combination is loaded with ``sae_lens.SAE.load_from_disk`` and must give
the same encode/decode/forward as our module; every architecture round-trips through
``load_saelens``; folders sae-lens wrote itself load into SAE Studio.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from saestudio.sae import SAEConfig, SparseAutoencoder, build_sae
from saestudio.sae.batchtopk import SETTLED_STEPS, BatchTopKSAE
from saestudio.sae.jumprelu import JumpReLUSAE
from saestudio.sae.saelens_format import (
    CFG_FILENAME,
    SPARSITY_FILENAME,
    WEIGHTS_FILENAME,
    save_saelens,
)
from saestudio.sae.saelens_load import load_saelens, load_saelens_sparsity
from saestudio.sae.standard import AnthropicSAE, StandardSAE
from saestudio.sae.topk import TopKSAE

D_IN, D_SAE, D_OUT, K = 48, 192, 40, 8


@pytest.fixture(scope="module")
def sae_lens() -> ModuleType:
    import sae_lens  # a test dependency: the real package, never skipped

    return sae_lens


# (id, SAEConfig fields, sae-lens class it must load as; None = SAE Studio only)
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("standard", {"architecture": "standard"}, "StandardSAE"),
    ("standard_anthropic", {"architecture": "standard_anthropic"}, "StandardSAE"),
    ("jumprelu", {"architecture": "jumprelu"}, "JumpReLUSAE"),
    ("topk", {"architecture": "topk", "k": K}, "TopKSAE"),
    ("batchtopk", {"architecture": "batchtopk", "k": K}, "JumpReLUSAE"),
    (
        "matryoshka_batchtopk",
        {"architecture": "matryoshka_batchtopk", "k": K, "matryoshka_widths": (16, 64, D_SAE)},
        "JumpReLUSAE",
    ),
    (
        "transcoder_matryoshka",
        {"architecture": "transcoder", "activation": "matryoshka_batchtopk", "k": K},
        "JumpReLUTranscoder",
    ),
    ("skip_relu", {"architecture": "skip", "activation": "relu"}, "SkipTranscoder"),
    (
        "skip_jumprelu",
        {"architecture": "skip", "activation": "jumprelu"},
        "JumpReLUSkipTranscoder",
    ),
    (
        "skip_batchtopk",
        {"architecture": "skip", "activation": "batchtopk", "k": K},
        "JumpReLUSkipTranscoder",
    ),
    ("transcoder_relu", {"architecture": "transcoder", "activation": "relu"}, "Transcoder"),
    (
        "transcoder_jumprelu",
        {"architecture": "transcoder", "activation": "jumprelu"},
        "JumpReLUTranscoder",
    ),
    (
        "transcoder_batchtopk",
        {"architecture": "transcoder", "activation": "batchtopk", "k": K},
        "JumpReLUTranscoder",
    ),
    (
        "skip_transcoder_relu",
        {"architecture": "transcoder", "activation": "relu", "skip": True},
        "SkipTranscoder",
    ),
    (
        "skip_transcoder_jumprelu",
        {"architecture": "transcoder", "activation": "jumprelu", "skip": True},
        "JumpReLUSkipTranscoder",
    ),
    (
        "skip_transcoder_batchtopk",
        {"architecture": "transcoder", "activation": "batchtopk", "k": K, "skip": True},
        "JumpReLUSkipTranscoder",
    ),
    ("topk_transcoder", {"architecture": "transcoder", "activation": "topk", "k": K}, None),
    (
        "topk_skip_transcoder",
        {"architecture": "transcoder", "activation": "topk", "k": K, "skip": True},
        None,
    ),
    ("skip_topk", {"architecture": "skip", "activation": "topk", "k": K}, None),
]
SAELENS_CASES = [c for c in CASES if c[2] is not None]


def _is_transcoder(fields: dict[str, Any]) -> bool:
    return fields["architecture"] == "transcoder"


def make_sae(fields: dict[str, Any], seed: int = 0) -> SparseAutoencoder:
    """An SAE with every parameter moved off its init, so a dropped or misnamed tensor
    shows up: nonzero biases, non-unit decoder rows, a learned skip path, thresholds that
    cut some positive pre-activations (so JumpReLU differs from ReLU)."""
    torch.manual_seed(seed)
    d_out = D_OUT if _is_transcoder(fields) else D_IN
    sae = build_sae(SAEConfig(d_sae=D_SAE, **fields).resolved(D_IN, d_out))
    with torch.no_grad():
        sae.W_enc.add_(0.05 * torch.randn_like(sae.W_enc))
        sae.W_dec.mul_(1 + 0.3 * torch.rand(D_SAE, 1))
        sae.b_enc.copy_(0.3 * torch.randn_like(sae.b_enc))
        sae.b_dec.copy_(0.5 * torch.randn_like(sae.b_dec))
        if sae.W_skip is not None:
            sae.W_skip.copy_(0.1 * torch.randn_like(sae.W_skip))
        if isinstance(sae, JumpReLUSAE):
            sae.threshold.copy_(0.1 + 0.7 * torch.rand_like(sae.threshold))
        if isinstance(sae, BatchTopKSAE):
            sae.get_buffer("threshold_ema").fill_(0.4)
    return sae.eval()  # BatchTopK exports its eval-mode (threshold) rule


def _pre_acts(sae: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    return sae.pre_activations(x)


# ---- export → real sae-lens -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "fields", "cls_name"), SAELENS_CASES, ids=[c[0] for c in SAELENS_CASES]
)
def test_export_loads_in_sae_lens_with_same_function(
    sae_lens: ModuleType, tmp_path: Path, name: str, fields: dict[str, Any], cls_name: str
) -> None:
    ours = make_sae(fields)
    save_saelens(ours, tmp_path / name, model_name="gpt2", hook_name="blocks.3.hook_mlp_in")
    theirs = sae_lens.SAE.load_from_disk(tmp_path / name)
    assert type(theirs).__name__ == cls_name

    torch.manual_seed(1)
    x = torch.randn(64, D_IN)
    with torch.no_grad():
        z_ours, z_theirs = ours.encode(x), theirs.encode(x)
        torch.testing.assert_close(z_theirs, z_ours)
        # the comparison must be able to fail: some latents on, most off
        assert 0 < (z_ours != 0).float().mean() < 0.9
        if isinstance(ours, JumpReLUSAE | BatchTopKSAE):
            pre = _pre_acts(ours, x)
            assert bool(((pre > 0) & (z_ours == 0)).any()), "threshold never bites"
        if isinstance(ours, TopKSAE) and not isinstance(ours, BatchTopKSAE):
            assert bool(((z_ours != 0).sum(-1) <= K).all())

        z = torch.relu(torch.randn(64, D_SAE))
        torch.testing.assert_close(theirs.decode(z), ours.decode(z))
        torch.testing.assert_close(theirs(x), ours(x).x_hat)
        if ours.W_skip is not None:  # sae-lens forward must include W_skip·x
            assert not torch.allclose(ours(x).x_hat, ours.decode(z_ours))


@pytest.mark.parametrize(("name", "fields", "cls_name"), CASES, ids=[c[0] for c in CASES])
def test_cfg_json_and_tensor_names(
    tmp_path: Path, name: str, fields: dict[str, Any], cls_name: str | None
) -> None:
    ours = make_sae(fields)
    out = save_saelens(ours, tmp_path, model_name="m", hook_name="h_in", hook_name_out="h_out")
    cfg = json.loads((out / CFG_FILENAME).read_text())
    with safe_open(str(out / WEIGHTS_FILENAME), framework="pt") as f:
        names = set(f.keys())

    assert cfg["dtype"] == "float32"
    assert cfg["device"] == "cpu"
    assert int(cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6
    assert cfg["metadata"]["model_name"] == "m"
    assert cfg["metadata"]["hook_name"] == "h_in"
    assert (cfg["d_in"], cfg["d_sae"]) == (D_IN, D_SAE)
    assert cfg["apply_b_dec_to_input"] is isinstance(ours, AnthropicSAE)
    assert cfg["saestudio"] == ours.cfg.model_dump(mode="json")
    assert "log_threshold" not in names
    assert ("threshold" in names) == isinstance(ours, JumpReLUSAE | BatchTopKSAE)
    assert ("W_skip" in names) == (ours.W_skip is not None)
    transcoder_like = _is_transcoder(fields) or ours.W_skip is not None
    assert ("d_out" in cfg) == transcoder_like
    if transcoder_like:
        assert cfg["d_out"] == ours.d_out
        assert cfg["metadata"]["hook_name_out"] == "h_out"
        assert cfg["apply_b_dec_to_input"] is False
    uses_k = isinstance(ours, TopKSAE) and not isinstance(ours, BatchTopKSAE)
    assert cfg.get("k") == (K if uses_k else None)
    if cls_name is None:
        assert cfg["architecture"] in ("topk_transcoder", "topk_skip_transcoder")


@pytest.mark.parametrize(("name", "fields", "cls_name"), CASES, ids=[c[0] for c in CASES])
def test_round_trip_reproduces_forward_exactly(
    tmp_path: Path, name: str, fields: dict[str, Any], cls_name: str | None
) -> None:
    ours = make_sae(fields)
    loaded = load_saelens(save_saelens(ours, tmp_path / name))
    assert type(loaded) is type(ours)
    assert loaded.cfg == ours.cfg
    assert not loaded.training
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        a, b = ours(x), loaded(x)
    torch.testing.assert_close(b.x_hat, a.x_hat, rtol=0, atol=0)
    torch.testing.assert_close(b.z, a.z, rtol=0, atol=0)
    for key, value in ours.state_dict().items():
        if key == "threshold_steps":  # θ's history is training state, not in the format:
            assert int(loaded.state_dict()[key]) == SETTLED_STEPS  # loaded θ counts as settled
            continue
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_topk_transcoder_is_refused_by_sae_lens(sae_lens: ModuleType, tmp_path: Path) -> None:
    """Documented limitation: sae-lens 6 has no TopK transcoder class."""
    save_saelens(make_sae(CASES[-3][1]), tmp_path)
    with pytest.raises(KeyError, match="topk_transcoder"):
        sae_lens.SAE.load_from_disk(tmp_path)


def test_skip_sae_hook_name_out_defaults_to_hook_name(tmp_path: Path) -> None:
    sae = make_sae({"architecture": "skip", "activation": "relu"})
    save_saelens(sae, tmp_path, hook_name="blocks.2.hook_resid_post")
    cfg = json.loads((tmp_path / CFG_FILENAME).read_text())
    assert cfg["metadata"]["hook_name_out"] == "blocks.2.hook_resid_post"


def test_extra_metadata_is_merged_and_conflicts_refused(tmp_path: Path) -> None:
    sae = make_sae({"architecture": "topk", "k": K})
    save_saelens(sae, tmp_path, hook_name="h", extra_metadata={"context_size": 128})
    cfg = json.loads((tmp_path / CFG_FILENAME).read_text())
    assert cfg["metadata"]["context_size"] == 128
    with pytest.raises(ValueError, match="hook_name"):
        save_saelens(sae, tmp_path, hook_name="h", extra_metadata={"hook_name": "other"})
    with pytest.raises(ValueError, match="sae_lens_version"):
        save_saelens(sae, tmp_path, extra_metadata={"sae_lens_version": "5.9.0"})
    with pytest.raises(ValueError, match="normalize_activations"):
        save_saelens(sae, tmp_path, normalize_activations="whiten_please")


def test_sparsity_file(sae_lens: ModuleType, tmp_path: Path) -> None:
    sae = make_sae({"architecture": "jumprelu"})
    density = torch.rand(D_SAE) * 0.1
    log_density = torch.log10(density + 1e-10)
    save_saelens(sae, tmp_path, sparsity=log_density)
    with safe_open(str(tmp_path / SPARSITY_FILENAME), framework="pt") as f:
        assert set(f.keys()) == {"sparsity"}
        torch.testing.assert_close(f.get_tensor("sparsity"), log_density)
    torch.testing.assert_close(load_saelens_sparsity(tmp_path), log_density)
    # raw densities (positive) are refused: the file must hold log10 values
    with pytest.raises(ValueError, match="log10"):
        save_saelens(sae, tmp_path, sparsity=density + 0.5)
    # ...and refused before anything was written
    torch.testing.assert_close(load_saelens_sparsity(tmp_path), log_density)
    # re-exporting without sparsity drops the stale file
    save_saelens(sae, tmp_path)
    assert load_saelens_sparsity(tmp_path) is None
    sae_lens.SAE.load_from_disk(tmp_path)  # still a valid sae-lens folder


def test_float16_export_keeps_dtype(tmp_path: Path) -> None:
    sae = make_sae({"architecture": "topk", "k": K}).to(torch.float16)
    save_saelens(sae, tmp_path)
    assert json.loads((tmp_path / CFG_FILENAME).read_text())["dtype"] == "float16"
    loaded = load_saelens(tmp_path)
    assert loaded.W_enc.dtype == torch.float16
    torch.testing.assert_close(loaded.W_dec, sae.W_dec, rtol=0, atol=0)


# ---- folders written by sae-lens itself -----------------------------------------------------
def _randomize_theirs(sae: Any) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name == "threshold":
                # include negative thresholds: sae-lens ReLUs first, we must clamp
                param.copy_(torch.rand_like(param) * 0.8 - 0.2)
            elif name.startswith("b_"):
                param.copy_(0.3 * torch.randn_like(param))
            elif name == "W_skip":
                param.copy_(0.1 * torch.randn_like(param))
            else:
                param.mul_(1 + 0.3 * torch.rand_like(param))


def _native(sae_lens: ModuleType, kind: str) -> Any:
    saes = sae_lens.saes
    meta = sae_lens.saes.sae.SAEMetadata
    if kind == "topk_apply_b_dec":  # sae-lens default: apply_b_dec_to_input=True
        return saes.TopKSAE(saes.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    if kind == "topk_rescale":
        cfg = saes.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True)
        return saes.TopKSAE(cfg)
    if kind == "standard_apply_b_dec":
        return saes.StandardSAE(saes.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE))
    if kind == "standard":
        cfg = saes.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False)
        return saes.StandardSAE(cfg)
    if kind == "jumprelu_apply_b_dec":
        return saes.JumpReLUSAE(saes.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE))
    tc = {"d_in": D_IN, "d_sae": D_SAE, "apply_b_dec_to_input": False}
    two_hooks = meta(
        hook_name="blocks.1.ln2.hook_normalized", hook_name_out="blocks.1.hook_mlp_out"
    )
    if kind == "transcoder":
        return saes.Transcoder(saes.TranscoderConfig(d_out=D_OUT, metadata=two_hooks, **tc))
    if kind == "skip_transcoder":
        return saes.SkipTranscoder(saes.SkipTranscoderConfig(d_out=D_OUT, metadata=two_hooks, **tc))
    if kind == "jumprelu_skip_same_hook":  # reads and writes one hook: our "skip" SAE
        cfg = saes.JumpReLUSkipTranscoderConfig(
            d_out=D_IN, metadata=meta(hook_name="blocks.1.hook_resid_post"), **tc
        )
        return saes.JumpReLUSkipTranscoder(cfg)
    raise AssertionError(kind)


NATIVE = [
    ("topk_apply_b_dec", TopKSAE, "topk"),
    ("topk_rescale", TopKSAE, "topk"),
    ("standard_apply_b_dec", AnthropicSAE, "standard_anthropic"),
    ("standard", StandardSAE, "standard"),
    ("jumprelu_apply_b_dec", JumpReLUSAE, "jumprelu"),
    ("transcoder", StandardSAE, "transcoder"),
    ("skip_transcoder", StandardSAE, "transcoder"),
    ("jumprelu_skip_same_hook", JumpReLUSAE, "skip"),
]


@pytest.mark.parametrize(("kind", "our_cls", "our_arch"), NATIVE, ids=[n[0] for n in NATIVE])
def test_load_folder_saved_by_sae_lens(
    sae_lens: ModuleType, tmp_path: Path, kind: str, our_cls: type, our_arch: str
) -> None:
    theirs = _native(sae_lens, kind)
    _randomize_theirs(theirs)
    theirs.save_model(tmp_path)
    assert "saestudio" not in json.loads((tmp_path / CFG_FILENAME).read_text())

    ours = load_saelens(tmp_path)
    assert type(ours) is our_cls
    assert ours.cfg.architecture == our_arch
    torch.manual_seed(4)
    x = torch.randn(64, D_IN)
    with torch.no_grad():
        z_theirs = theirs.encode(x)
        assert 0 < (z_theirs != 0).float().mean() < 0.9
        # folding b_dec / decoder norms into other tensors changes float rounding only
        torch.testing.assert_close(ours.encode(x), z_theirs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x).x_hat, theirs(x), rtol=1e-5, atol=1e-5)


# ---- errors ---------------------------------------------------------------------------------
def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_sae"
    with pytest.raises(FileNotFoundError, match="no_such_sae"):
        load_saelens(missing)


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    save_saelens(make_sae({"architecture": "standard"}), tmp_path)
    (tmp_path / WEIGHTS_FILENAME).unlink()
    with pytest.raises(FileNotFoundError, match="sae_weights.safetensors"):
        load_saelens(tmp_path)


def test_missing_cfg_file_is_named(tmp_path: Path) -> None:
    save_saelens(make_sae({"architecture": "standard"}), tmp_path)
    (tmp_path / CFG_FILENAME).unlink()
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_saelens(tmp_path)


def test_unknown_architecture_is_named(sae_lens: ModuleType, tmp_path: Path) -> None:
    saes = sae_lens.saes
    saes.GatedSAE(saes.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE)).save_model(tmp_path)
    with pytest.raises(ValueError, match="'gated'"):
        load_saelens(tmp_path)


def test_unknown_architecture_handwritten(tmp_path: Path) -> None:
    cfg = {
        "architecture": "mystery",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "metadata": {"sae_lens_version": "6.54.12"},
    }
    (tmp_path / CFG_FILENAME).write_text(json.dumps(cfg))
    save_file({"W_enc": torch.zeros(D_IN, D_SAE)}, str(tmp_path / WEIGHTS_FILENAME))
    with pytest.raises(ValueError, match="mystery"):
        load_saelens(tmp_path)


def test_tampered_tensors_are_refused(tmp_path: Path) -> None:
    save_saelens(make_sae({"architecture": "jumprelu"}), tmp_path)
    weights = tmp_path / WEIGHTS_FILENAME
    with safe_open(str(weights), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != "threshold"}  # noqa: SIM118
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match="threshold"):
        load_saelens(tmp_path)


# ---- folding an input scale into the weights ------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [
        {"architecture": "standard"},  # no b_dec subtraction
        {"architecture": "standard_anthropic"},  # b_dec subtracted from the input
        {"architecture": "jumprelu"},
        {"architecture": "skip", "activation": "topk", "k": K},
    ],
    ids=["standard", "standard_anthropic", "jumprelu", "skip_topk"],
)
def test_fold_input_scaling_matches_scaled_forward(fields: dict[str, Any]) -> None:
    scale = 3.7
    original = make_sae(fields)
    folded = copy.deepcopy(original)
    folded.fold_input_scaling(scale, scale)
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        expect = original(x * scale)
        got = folded(x)
    torch.testing.assert_close(got.z, expect.z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.x_hat, expect.x_hat / scale, rtol=1e-5, atol=1e-5)


def test_fold_input_scaling_transcoder_with_two_scales(
    sae_lens: ModuleType, tmp_path: Path
) -> None:
    """Transcoders normalise input and target separately; folded and exported, sae-lens
    then reproduces the trained function on raw activations."""
    s_in, s_out = 2.5, 0.4
    original = make_sae({"architecture": "transcoder", "activation": "jumprelu", "skip": True})
    folded = copy.deepcopy(original)
    folded.fold_input_scaling(s_in, s_out)
    save_saelens(folded, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        expect = original(x * s_in).x_hat / s_out
        torch.testing.assert_close(folded(x).x_hat, expect, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs(x), expect, rtol=1e-5, atol=1e-5)


def test_fold_input_scaling_refuses_two_scales_with_b_dec_subtraction() -> None:
    sae = make_sae({"architecture": "standard_anthropic"})
    with pytest.raises(ValueError, match="scales must match"):
        sae.fold_input_scaling(2.0, 3.0)
