"""Prompt search: a text through the run's model and one of its SAEs, in the API process.

The model and the SAE stay loaded between requests (a small LRU per process), so after
the first request a prompt costs one forward pass up to the hook and one encoder pass.
Tokens are made the way the extraction made them (no special tokens around the text,
BOS/CLS first when the dataset's contexts started with it), so a latent fires on the
same token here as in its examples.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch

from saestudio.activations.hookpoints import capture, resolve_hook, run_captured
from saestudio.activations.manifest import Manifest
from saestudio.activations.models import load_model
from saestudio.activations.text_data import bos_token_id, load_tokenizer
from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.saelens_load import load_saelens, read_saelens_cfg

T = TypeVar("T")
_LOCK = threading.Lock()
"""One prompt at a time: torch already uses every core for one forward pass."""


class ModelUnavailable(RuntimeError):
    """The run's model cannot be loaded here (not a local folder, hub unreachable)."""


class TooLong(ValueError):
    """The prompt has more tokens than the limit."""


class _Cache:
    """A tiny LRU of loaded objects (models are hundreds of MB: keep two)."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict[Any, Any]()

    def get(self, key: Any, make: Callable[[], T]) -> T:
        if key in self.items:
            self.items.move_to_end(key)
            value: T = self.items[key]
            return value
        value = make()
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


_MODELS = _Cache(2)
_SAES = _Cache(8)
_LOADING = threading.Lock()
"""Held while a model loads: a request that arrives during the warm-up waits for it
instead of loading the model a second time."""
WARMUP_THREAD = "prompt-model-warmup"


class Encoded(NamedTuple):
    """A prompt as the SAE sees it."""

    tokens: list[str]
    """Decoded tokens, one per row of ``z``."""
    z: torch.Tensor
    """[tokens, d_sae] latent activations."""
    seconds: float


def _model(manifest: Manifest) -> tuple[Any, Any]:
    def make() -> tuple[Any, Any]:
        try:
            tokenizer = load_tokenizer(manifest.model)
            model = load_model(manifest.model, manifest.model_dtype, device="cpu")
        except (OSError, ValueError) as e:
            raise ModelUnavailable(
                f"model: {manifest.model!r} is not available on this server ({e})"
            ) from e
        return model, tokenizer

    with _LOADING:
        return _MODELS.get(_key(manifest), make)


def _key(manifest: Manifest) -> tuple[str, str]:
    return (manifest.model, manifest.model_dtype)


def warm(manifest: Manifest) -> None:
    """Load the run's model in a background thread unless it is loaded or loading.

    The Features tab asks for the inspection before anyone types a prompt; loading the
    model then means the first prompt costs a forward pass, not the model load (4–6 s
    for MiniLM on two busy cores). A model that cannot load is left for the prompt
    request to report (409)."""
    key = _key(manifest)
    if key in _MODELS.items or any(t.name == WARMUP_THREAD for t in threading.enumerate()):
        return  # a second warm-up racing past this check only waits on _LOADING

    def load() -> None:
        with contextlib.suppress(ModelUnavailable):
            _model(manifest)

    threading.Thread(target=load, name=WARMUP_THREAD, daemon=True).start()


def _sae(folder: Path) -> tuple[SparseAutoencoder, dict[str, Any]]:
    weights = folder / "sae_weights.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.is_file() else 0

    def make() -> tuple[SparseAutoencoder, dict[str, Any]]:
        return load_saelens(folder).eval(), read_saelens_cfg(folder)

    return _SAES.get((str(folder), stamp), make)


def count_tokens(manifest: Manifest, text: str) -> int:
    """Tokens the prompt becomes (the limit is checked before the model runs)."""
    _, tokenizer = _model(manifest)
    return len(_ids(manifest, tokenizer, text))


def _ids(manifest: Manifest, tokenizer: Any, text: str) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    bos = bos_token_id(tokenizer) if manifest.prepend_bos else None
    return ([bos] if bos is not None else []) + ids


def encode_prompt(
    manifest: Manifest, sae_folder: Path, hook: str | None, text: str, max_tokens: int
) -> Encoded:
    """Run ``text`` through the model to ``hook`` (default: the SAE's own hook name)
    and encode every token with the SAE. :class:`TooLong` past ``max_tokens``,
    :class:`ModelUnavailable` when the model cannot be loaded."""
    model, tokenizer = _model(manifest)
    sae, cfg = _sae(sae_folder)
    ids = _ids(manifest, tokenizer, text)
    if len(ids) > max_tokens:
        raise TooLong(f"text: {len(ids)} tokens, more than the limit of {max_tokens}")
    meta = cfg.get("metadata") or {}
    hook_name = hook or str(meta.get("hook_name") or cfg.get("hook_name") or "")
    if hook_name not in manifest.hooks:
        raise ValueError(f"sae: its hook {hook_name!r} is not in the run's dataset")
    special = set(manifest.special_token_ids) if manifest.exclude_special_tokens else set()
    keep = [i for i, t in enumerate(ids) if t not in special]
    with _LOCK, torch.inference_mode():
        t0 = time.perf_counter()
        hp = resolve_hook(model, hook_name)
        with capture(model, [hp], stop_early=True) as acts:
            run_captured(model, input_ids=torch.tensor([ids], dtype=torch.long))
        x = acts[hp.name][0, keep].float()  # [tokens, d_in]
        if cfg.get("normalize_activations") == "constant_norm_rescale":
            x = x * (math.sqrt(x.shape[1]) / x.norm(dim=1, keepdim=True).clamp_min(1e-12))
        z = sae.encode(x)  # [tokens, d_sae]
        seconds = time.perf_counter() - t0
    tokens = [tokenizer.decode([ids[i]]) for i in keep]
    return Encoded(tokens, z, seconds)
