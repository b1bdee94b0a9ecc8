"""Logit lens of a latent: the tokens its decoder direction promotes and suppresses.

``W_dec[i] @ W_U`` (the unembedding ``W_U[d_model, vocab]``) read through no final
norm, as sae-dashboard and Neuronpedia show it. Only models with an unembedding have one:
causal LMs (GPT-2, NeoX, Llama, Gemma…); an encoder such as MiniLM has none, and its
records carry no ``logits`` at all.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

LATENTS_PER_CHUNK = 256  # [chunk, vocab] logits at a time, never [d_sae, vocab]


def unembedding(model: nn.Module) -> Tensor | None:
    """``W_U[d_model, vocab]`` of a transformers causal LM, or None for models without an
    LM head (``get_output_embeddings()`` is None for bare encoders such as ``BertModel``)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    weight = getattr(head, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        return None
    return weight.detach().T  # lm_head.weight is [vocab, d_model]


@torch.no_grad()
def logit_lens(W_dec: Tensor, W_U: Tensor, k: int = 10) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(top values, top token ids, bottom values, bottom ids), each ``[d_sae, k]``,
    highest first for the top and lowest first for the bottom."""
    if W_dec.shape[1] != W_U.shape[0]:
        raise ValueError(
            f"unembed: W_U has d_model {W_U.shape[0]} but the SAE decodes to {W_dec.shape[1]}"
        )
    k = min(k, W_U.shape[1])
    W_U = W_U.to(W_dec.device, torch.float32)
    parts: list[tuple[Tensor, ...]] = []
    for s in range(0, W_dec.shape[0], LATENTS_PER_CHUNK):
        logits = W_dec[s : s + LATENTS_PER_CHUNK].float() @ W_U  # [chunk, vocab]
        tv, ti = logits.topk(k, dim=1)
        bv, bi = logits.topk(k, dim=1, largest=False)
        parts.append((tv, ti, bv, bi))
    tv, ti, bv, bi = (torch.cat(p).cpu() for p in zip(*parts, strict=True))
    return tv, ti, bv, bi


def token_entries(values: Tensor, ids: Tensor, decode: Any) -> list[dict[str, Any]]:
    """``[{"token", "token_id", "value"}]`` of one latent's row."""
    from saestudio.features.records import sig

    vals = sig(values.numpy())
    return [
        {"token": decode(int(t)), "token_id": int(t), "value": v}
        for t, v in zip(ids.tolist(), vals, strict=True)
    ]
