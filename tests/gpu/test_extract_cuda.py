"""Extraction on CUDA: the pinned-memory asynchronous copy path stores exactly what the
model computes, in fp32 and in bf16. Skipped without CUDA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers as tf  # noqa: E402

from saestudio.activations.extract import (  # noqa: E402
    ExtractConfig,
    extract,
    load_model,
    open_hook,
    open_tokens,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random 3-layer Llama with the unit tests' character tokenizer."""
    import importlib.util

    here = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location("unit_conftest", here.parent / "unit/conftest.py")
    assert spec is not None and spec.loader is not None
    unit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unit)
    path = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=100, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    unit.save_tiny_tokenizer(path)
    return str(path)


@pytest.mark.parametrize(
    ("model_dtype", "tol"), [("float32", (1.3e-6, 1e-5)), ("bfloat16", (1.6e-2, 1e-2))]
)
def test_cuda_extraction_is_exact(llama_dir: str, tmp_path: Path, model_dtype: str, tol) -> None:
    hooks = ["resid_post.0", "mlp_out.1"]
    cfg = ExtractConfig(
        model=llama_dir, dataset="demo:pydoc", hooks=hooks, out=str(tmp_path / "all"), context_length=64,
        max_tokens=64 * 40, batch_size=8, shard_tokens=64 * 16, device="cuda", dtype=model_dtype,
        model_dtype=model_dtype,
    )  # fmt: skip
    m = extract(cfg, progress=False)
    assert m.complete and m.contexts == 40 and m.rows == 40 * 64
    ids = torch.from_numpy(open_tokens(tmp_path / "all")[0]).long().view(40, 64)
    model = load_model(llama_dir, model_dtype, "cuda")
    mlp = dict(model.named_modules())["model.layers.1.mlp"]
    outs: list[torch.Tensor] = []
    hs1: list[torch.Tensor] = []
    handle = mlp.register_forward_hook(lambda _m, _i, o: outs.append(o))
    with torch.no_grad():
        for i in range(0, 40, 8):  # the extraction's batches
            hs1.append(
                model(input_ids=ids[i : i + 8].cuda(), output_hidden_states=True).hidden_states[1]
            )
    handle.remove()
    rtol, atol = tol
    got = {h: open_hook(tmp_path / "all", h).read(0, m.rows) for h in hooks}
    torch.testing.assert_close(
        got["resid_post.0"], torch.cat(hs1).reshape(m.rows, -1).float().cpu(), rtol=rtol, atol=atol
    )
    torch.testing.assert_close(
        got["mlp_out.1"], torch.cat(outs).reshape(m.rows, -1).float().cpu(), rtol=rtol, atol=atol
    )

    # special tokens excluded on the GPU (index_select): the same rows minus those
    excl = extract(
        cfg.model_copy(update={"out": str(tmp_path / "excl"), "exclude_special_tokens": True}),
        progress=False,
    )
    keep = ~torch.isin(ids.flatten(), torch.tensor(excl.special_token_ids))
    assert excl.rows == int(keep.sum()) < m.rows
    for h in hooks:
        torch.testing.assert_close(
            open_hook(tmp_path / "excl", h).read(0, excl.rows), got[h][keep], rtol=rtol, atol=atol
        )
