"""Downstream metric (SPEC §2.C): the model's next-token loss with an SAE spliced in.

Three forward passes per batch of contexts, all under ``torch.no_grad`` in eval mode:

- **clean**: the model as it is;
- **spliced**: the activation at the hook replaced by the SAE's reconstruction
  ``sae(x).x_hat`` (a transcoder reads ``hook`` and replaces ``target_hook``: the MLP is
  swapped for the transcoder);
- **zero-ablated**: the same activation replaced by zeros.

``CE loss recovered = (CE_zero − CE_spliced) / (CE_zero − CE_clean)``: 1 when the SAE is
as good as the real activation, 0 when it is as bad as deleting it (SAELens
``evals.py``; Bricken et al. 2023, "Towards Monosemanticity", §"Automated ... loss").
``KL(clean ‖ spliced)`` is the mean over predicted tokens of the KL divergence between
the clean and the spliced next-token distributions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saestudio.activations.hookpoints import HookPoint, resolve_hook
from saestudio.sae.base import SparseAutoencoder

Replace = Callable[[Tensor], Tensor]
NORMALIZE = ("none", "expected_average_only_in", "unit_mean_squared_norm", "constant_norm_rescale")
"""Accepted ``normalize_activations``; only ``constant_norm_rescale`` acts at run time (the
dataset-wide scales are folded into exported weights; sae-lens treats them as identity)."""


class DownstreamResult(NamedTuple):
    """Next-token loss of a causal LM with and without the SAE (nats per token)."""

    ce_clean: float
    """Mean next-token cross-entropy of the unmodified model."""
    ce_spliced: float
    """The same with the hook's activation replaced by the SAE's reconstruction."""
    ce_zero_ablated: float
    """The same with the hook's activation replaced by zeros."""
    ce_loss_recovered: float
    """(ce_zero − ce_spliced) / (ce_zero − ce_clean); NaN when zero ablation costs nothing."""
    kl_spliced: float
    """Mean KL(clean ‖ spliced) of the next-token distributions."""
    kl_zero: float
    """Mean KL(clean ‖ zero-ablated)."""
    tokens: int
    """Number of predicted tokens averaged over (padding excluded)."""


def is_causal_lm_class(name: str) -> bool:
    """Whether a transformers class name (``GPT2LMHeadModel``) is a causal LM."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() or name.endswith(
        ("ForCausalLM", "LMHeadModel")
    )


def check_causal_lm(model: nn.Module) -> None:
    """Refuse models whose next-token loss is undefined (encoders, no LM head)."""
    get_head = getattr(model, "get_output_embeddings", None)
    name = type(model).__name__
    if get_head is None or get_head() is None:
        raise ValueError(f"downstream: CE loss needs a causal LM; {name} has no LM head")
    if not is_causal_lm_class(name):
        raise ValueError(f"downstream: CE loss needs a causal LM; {name} is not one")


def _swap_first(value: Any, new: Tensor) -> Any:
    """``value`` with its (first) tensor replaced, keeping tuple/list structure."""
    if isinstance(value, Tensor):
        return new
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return type(value)([new, *value[1:]])
    raise TypeError(f"downstream: cannot find a tensor in a {type(value).__name__}")


def _first(value: Any) -> Tensor:
    return value if isinstance(value, Tensor) else value[0]


@contextmanager
def _hooks(model: nn.Module, edits: list[tuple[HookPoint, Replace]]) -> Iterator[None]:
    """Apply ``replace`` to each hook point's activation (module input or output)."""
    modules = dict(model.named_modules())
    handles = []
    for hp, replace in edits:
        mod = modules[hp.module]
        if hp.capture == "input":

            def pre(_m: nn.Module, args: tuple, kwargs: dict, f: Replace = replace) -> Any:
                if args:
                    return _swap_first(args, f(_first(args))), kwargs
                # called with hidden_states=... as a keyword
                return args, {**kwargs, "hidden_states": f(kwargs["hidden_states"])}

            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        else:

            def post(_m: nn.Module, _a: tuple, out: Any, f: Replace = replace) -> Any:
                return _swap_first(out, f(_first(out)))

            handles.append(mod.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _reconstruct(sae: SparseAutoencoder, x: Tensor, normalize: str, d_out: int) -> Tensor:
    """``sae(x).x_hat`` for ``[..., d_in]`` activations, computed in float32."""
    if x.shape[-1] != sae.d_in:
        raise ValueError(
            f"downstream: the hook is {x.shape[-1]} wide but the SAE's d_in is {sae.d_in}"
        )
    flat = x.reshape(-1, x.shape[-1]).float()  # [tokens, d_in]
    coeff = None
    if normalize == "constant_norm_rescale":
        # SAELens run-time normalisation: x·√d_in/‖x‖ in, the same factor divided out
        coeff = math.sqrt(sae.d_in) / flat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        flat = flat * coeff
    x_hat = sae(flat).x_hat  # [tokens, d_out]
    if coeff is not None:
        x_hat = x_hat / coeff
    return x_hat.reshape(*x.shape[:-1], d_out).to(x.dtype)


def _edits(
    model: nn.Module,
    sae: SparseAutoencoder,
    hook: str,
    target_hook: str | None,
    normalize: str,
) -> tuple[list[tuple[HookPoint, Replace]], list[tuple[HookPoint, Replace]]]:
    """Hook edits for the spliced pass and for the zero-ablated pass."""
    hp_in = resolve_hook(model, hook)
    if sae.cfg.is_transcoder and target_hook is None:
        raise ValueError("downstream: a transcoder needs target_hook (e.g. mlp_out.3)")
    if target_hook is None or target_hook == hook:
        if sae.cfg.is_transcoder and sae.d_out != sae.d_in:
            raise ValueError("downstream: a transcoder cannot read and write the same hook")
        splice = [(hp_in, lambda x: _reconstruct(sae, x, normalize, sae.d_out))]
        return splice, [(hp_in, torch.zeros_like)]

    hp_out = resolve_hook(model, target_hook)
    stash: dict[str, Tensor] = {}

    def read(x: Tensor) -> Tensor:
        stash["x"] = x
        return x

    def write(y: Tensor) -> Tensor:
        if "x" not in stash:
            raise RuntimeError(f"downstream: {target_hook} ran before {hook} was read")
        y_hat = _reconstruct(sae, stash.pop("x"), normalize, sae.d_out)
        if y_hat.shape != y.shape:
            raise ValueError(
                f"downstream: the transcoder writes {tuple(y_hat.shape)} but {target_hook} "
                f"is {tuple(y.shape)}"
            )
        return y_hat.to(y.dtype)

    return [(hp_in, read), (hp_out, write)], [(hp_out, torch.zeros_like)]


@contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode (dropout off, BatchTopK's inference threshold on), restored afterwards."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(modules, was, strict=True):
            m.train(w)


def _on(sae: SparseAutoencoder, device: torch.device) -> SparseAutoencoder:
    """The SAE in float32 on ``device``; a copy only when it is not there already."""
    if all(p.device == device and p.dtype == torch.float32 for p in sae.parameters()):
        return sae
    return copy.deepcopy(sae).to(device=device, dtype=torch.float32)


@torch.no_grad()
def evaluate_downstream(
    model: nn.Module,
    sae: SparseAutoencoder,
    hook: str,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    target_hook: str | None = None,
    batch_size: int = 8,
    normalize: str = "none",
) -> DownstreamResult:
    """Clean / spliced / zero-ablated next-token loss of ``model`` over ``input_ids``.

    ``hook`` is a friendly name (``resid_post.3``) or a module path; for a transcoder it
    is the hook read and ``target_hook`` the one replaced. ``input_ids`` is
    ``[contexts, seq]``; ``attention_mask`` (1 = real token) excludes padding from the
    loss. ``normalize`` is the SAE's ``normalize_activations``: only
    ``"constant_norm_rescale"`` acts at run time (our exports fold fixed scales into the
    weights). The SAE runs in float32 and its output is cast back to the model's dtype.

    Raises ``ValueError`` for a model without a causal LM head, a transcoder without a
    target hook, or widths that do not match; ``HookError`` for an unknown hook.
    """
    check_causal_lm(model)
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize: must be one of {NORMALIZE}, got {normalize!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    with _eval_mode(model, sae):
        run_sae = _on(sae, device)
        run_sae.eval()
        splice, zero = _edits(model, run_sae, hook, target_hook, normalize)
        ce = torch.zeros(3, dtype=torch.float64)  # summed over tokens: clean, spliced, zero
        kl = torch.zeros(2, dtype=torch.float64)  # spliced, zero
        tokens = 0
        for start in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[start : start + batch_size].to(device)
            mask = None if attention_mask is None else attention_mask[start : start + batch_size]
            mask = torch.ones_like(ids) if mask is None else mask.to(device)
            labels = ids[:, 1:]
            # a prediction counts when both the position and its target are real tokens
            keep = (mask[:, :-1] != 0) & (mask[:, 1:] != 0)  # [b, seq-1]
            logps = []
            for edits in ([], splice, zero):
                with _hooks(model, edits):
                    logits = model(input_ids=ids, attention_mask=mask).logits
                logps.append(F.log_softmax(logits[:, :-1][keep].float(), dim=-1))  # [n, vocab]
            target = labels[keep]  # [n]
            for i, lp in enumerate(logps):
                ce[i] += F.nll_loss(lp, target, reduction="sum").double().cpu()
            p_clean = logps[0].exp()
            for i, lp in enumerate(logps[1:]):
                kl[i] += (p_clean * (logps[0] - lp)).sum().double().cpu()
            tokens += int(keep.sum())
    if tokens == 0:
        raise ValueError("downstream: no tokens to predict (contexts need ≥ 2 real tokens)")
    clean, spliced, zeroed = (float(v) / tokens for v in ce)
    denom = zeroed - clean
    recovered = (zeroed - spliced) / denom if denom != 0 else math.nan
    return DownstreamResult(
        ce_clean=clean,
        ce_spliced=spliced,
        ce_zero_ablated=zeroed,
        ce_loss_recovered=recovered,
        kl_spliced=float(kl[0]) / tokens,
        kl_zero=float(kl[1]) / tokens,
        tokens=tokens,
    )


__all__ = ["DownstreamResult", "check_causal_lm", "evaluate_downstream", "is_causal_lm_class"]
