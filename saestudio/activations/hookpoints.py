"""Hook points: friendly names (``resid_post.3``, ``mlp_in.3`` …) → modules of any HF model.

The seed only knew ``model.model.layers`` (erratum 11). Here the transformer's layer
list is found by name for the common families — GPT-2 (``transformer.h``), GPT-NeoX /
Pythia (``gpt_neox.layers``), Llama / Mistral / Qwen / Gemma (``model.layers``), BERT-style
encoders (``encoder.layer``) — with a structural fallback, and any raw module path from
``model.named_modules()`` works too (its output is captured).

Names per layer L:

- ``resid_pre.L``  the residual stream entering layer L (the layer's input)
- ``resid_post.L`` the residual stream leaving layer L (the layer's output)
- ``mlp_in.L``     the MLP's input (after its layer norm: what a transcoder reads)
- ``mlp_out.L``    the MLP's output (before it is added to the residual stream)
- ``attn_out.L``   the attention block's output (before the residual add)

BERT-style (post-LN) layers have no single MLP module: ``mlp_in`` is the input of
``intermediate`` and ``mlp_out`` the output of ``output.dense``; ``attn_out`` is the
output of ``attention.output.dense``.

Sandwich-norm layers (Gemma 2/3, OLMo 2) normalise the attention and MLP outputs before
the residual add, so ``attn_out`` / ``mlp_out`` are the outputs of
``post_attention_layernorm`` / ``post_feedforward_layernorm``: for every pre-LN family
``resid_post.L == resid_pre.L + attn_out.L + mlp_out.L`` (what Gemma Scope calls the
attention and MLP outputs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

FRIENDLY = ("resid_pre", "resid_post", "mlp_in", "mlp_out", "attn_out")
LAYER_LISTS = (
    "transformer.h",
    "gpt_neox.layers",
    "model.layers",
    "model.language_model.layers",
    "language_model.model.layers",
    "model.decoder.layers",
    "encoder.layer",
    "bert.encoder.layer",
    "roberta.encoder.layer",
    "layers",
    "h",
)
MLP_NAMES = ("mlp", "feed_forward", "ffn")
ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")


class HookError(ValueError):
    """An unknown or unresolvable hook name; the message lists the valid ones."""


@dataclass(frozen=True)
class HookPoint:
    name: str  # what the user wrote, e.g. "resid_post.3"
    module: str  # path in model.named_modules()
    capture: Literal["input", "output"]
    layer: int | None  # index in the layer list, when inside one


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of transformer layers and its path."""
    modules = dict(model.named_modules())
    for path in LAYER_LISTS:
        m = modules.get(path)
        if isinstance(m, nn.ModuleList) and len(m) > 0:
            return path, m
    # fallback: the longest ModuleList of identical blocks
    lists = [
        (p, m)
        for p, m in modules.items()
        if isinstance(m, nn.ModuleList) and len(m) > 1 and len({type(c) for c in m}) == 1
    ]
    if not lists:
        raise HookError(
            f"model: cannot find the transformer layers of {type(model).__name__}; "
            "use raw module paths from model.named_modules()"
        )
    return max(lists, key=lambda pm: len(pm[1]))


def _child(layer: nn.Module, names: tuple[str, ...]) -> str | None:
    children = dict(layer.named_children())
    return next((n for n in names if n in children), None)


def _sub_path(layer: nn.Module, kind: str) -> tuple[str, Literal["input", "output"]] | None:
    """Relative module path and capture side for mlp_in / mlp_out / attn_out in one layer."""
    modules = dict(layer.named_modules())
    bert = "intermediate" in modules and "output.dense" in modules
    # Gemma 2/3, OLMo 2: block outputs pass a norm before the residual add (see module doc)
    sandwich = "post_feedforward_layernorm" in dict(layer.named_children())
    if sandwich and kind == "mlp_out":
        return "post_feedforward_layernorm", "output"
    if sandwich and kind == "attn_out" and "post_attention_layernorm" in modules:
        return "post_attention_layernorm", "output"
    if kind == "mlp_in":
        if bert:
            return "intermediate", "input"
        mlp = _child(layer, MLP_NAMES)
        return (mlp, "input") if mlp else None
    if kind == "mlp_out":
        if bert:
            return "output.dense", "output"
        mlp = _child(layer, MLP_NAMES)
        return (mlp, "output") if mlp else None
    if kind == "attn_out":
        if bert and "attention.output.dense" in modules:
            return "attention.output.dense", "output"
        attn = _child(layer, ATTN_NAMES)
        return (attn, "output") if attn else None
    return None


def valid_hook_names(model: nn.Module) -> list[str]:
    """Every friendly name this model resolves (raw module paths are valid too)."""
    try:
        _, layers = find_layers(model)
    except HookError:
        return []
    names = []
    for i, layer in enumerate(layers):
        names += [f"resid_pre.{i}", f"resid_post.{i}"]
        names += [f"{k}.{i}" for k in ("mlp_in", "mlp_out", "attn_out") if _sub_path(layer, k)]
    return names


def resolve_hook(model: nn.Module, name: str) -> HookPoint:
    """A friendly name or a raw module path → :class:`HookPoint`."""
    kind, _, idx = name.rpartition(".")
    modules = dict(model.named_modules())
    if kind in FRIENDLY and idx.isdigit():
        path, layers = find_layers(model)
        i = int(idx)
        if i >= len(layers):
            raise HookError(
                f"hooks: {name}: the model has {len(layers)} layers (0–{len(layers) - 1})"
            )
        if kind in ("resid_pre", "resid_post"):
            side: Literal["input", "output"] = "input" if kind == "resid_pre" else "output"
            return HookPoint(name, f"{path}.{i}", side, i)
        sub = _sub_path(layers[i], kind)
        if sub is not None:
            return HookPoint(name, f"{path}.{i}.{sub[0]}", sub[1], i)
    elif name in modules and name:
        return HookPoint(name, name, "output", _layer_of(model, name))
    valid = valid_hook_names(model)
    shown = ", ".join(valid[:12]) + (" …" if len(valid) > 12 else "")
    raise HookError(
        f"hooks: unknown hook {name!r}; valid names: {shown} "
        "(or any path from model.named_modules())"
    )


def _layer_of(model: nn.Module, module_path: str) -> int | None:
    try:
        path, _ = find_layers(model)
    except HookError:
        return None
    rest = module_path.removeprefix(path + ".")
    head = rest.split(".")[0]
    return int(head) if rest != module_path and head.isdigit() else None


class _StopForward(Exception):
    """Raised by the last hook to end the forward pass early."""


def _first_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    raise TypeError(f"cannot find a tensor in a {type(value).__name__}")


@contextmanager
def capture(
    model: nn.Module, hooks: list[HookPoint], stop_early: bool = True
) -> Iterator[dict[str, Tensor]]:
    """Register hooks; the yielded dict fills with ``name → [batch, seq, d]`` per forward.

    Captured tensors are copies, so a model that later updates a buffer in place cannot
    change what was captured. With ``stop_early`` (and every hook inside the layer list,
    where each module runs once per forward), the forward pass ends — via an exception
    that :func:`run_captured` swallows — as soon as the last needed activation exists:
    ``resid_pre.3`` stops before layer 3 runs, ``mlp_out.3`` before layer 4; later
    layers, the final norm and the LM head never run.
    """
    modules = dict(model.named_modules())
    acts: dict[str, Tensor] = {}
    handles = []
    stop = stop_early and bool(hooks) and all(hp.layer is not None for hp in hooks)
    fired: set[str] = set()  # hooks seen in the current forward pass
    needed = len({hp.name for hp in hooks})

    def store(name: str, value: Tensor) -> None:
        acts[name] = value.detach().clone()
        if name in fired:  # a new forward pass (the previous one ended without a stop)
            fired.clear()
        fired.add(name)
        if stop and len(fired) == needed:
            fired.clear()
            raise _StopForward

    for hp in hooks:
        mod = modules[hp.module]
        if hp.capture == "input":

            def pre(_m: nn.Module, args: tuple, kwargs: dict, hp: HookPoint = hp) -> None:
                store(hp.name, _first_tensor(args if args else kwargs["hidden_states"]))

            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        else:

            def post(_m: nn.Module, _a: tuple, out: Any, hp: HookPoint = hp) -> None:
                store(hp.name, _first_tensor(out))

            handles.append(mod.register_forward_hook(post))
    try:
        yield acts
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def run_captured(model: nn.Module, **inputs: Tensor) -> None:
    """Run the model inside :func:`capture`; an early stop is not an error."""
    with suppress(_StopForward):
        model(**inputs)
