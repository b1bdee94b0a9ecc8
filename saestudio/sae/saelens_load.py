"""Load SAELens-format folders (ours, or written by sae-lens itself) into SAE Studio modules.

See :mod:`saestudio.sae.saelens_format` for the format and the architecture mapping.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.batchtopk import SETTLED_STEPS, BatchTopKSAE
from saestudio.sae.config import SAEConfig
from saestudio.sae.registry import build_sae
from saestudio.sae.saelens_format import (
    _STR_TO_DTYPE,
    _TRANSCODER_IMPORT,
    CFG_FILENAME,
    LOADABLE_ARCHITECTURES,
    SAESTUDIO_KEY,
    SPARSITY_FILENAME,
    WEIGHTS_FILENAME,
    _expected_tensor_names,
    _major_version,
    saelens_architecture,
)

logger = logging.getLogger(__name__)


def read_saelens_cfg(path: str | Path) -> dict[str, Any]:
    """The parsed ``cfg.json`` of an SAELens folder (metadata such as ``hook_name`` lives
    here; the module returned by :func:`load_saelens` does not carry it)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"SAELens folder not found: {folder}")
    cfg_path = folder / CFG_FILENAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: an SAELens folder needs {CFG_FILENAME}")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def load_saelens_sparsity(path: str | Path) -> Tensor | None:
    """The ``[d_sae]`` log10 feature density saved next to an export, or None."""
    sparsity_path = Path(path) / SPARSITY_FILENAME
    if not sparsity_path.is_file():
        return None
    return load_file(str(sparsity_path))["sparsity"]


def _require(cfg: dict[str, Any], key: str, cfg_path: Path) -> Any:
    if key not in cfg:
        raise ValueError(f"{cfg_path}: missing required key {key!r}")
    return cfg[key]


def _foreign_config(cfg: dict[str, Any], cfg_path: Path) -> tuple[SAEConfig, bool]:
    """Our SAEConfig for a folder sae-lens wrote, plus its ``apply_b_dec_to_input``."""
    metadata = cfg.get("metadata") or {}
    version = metadata.get("sae_lens_version") or cfg.get("sae_lens_version")
    major = _major_version(version) if version else None
    legacy = major is None or major < 6
    architecture = cfg.get("architecture", "standard" if legacy else None)
    k = cfg.get("k")
    if legacy and cfg.get("activation_fn") == "topk":
        # pre-6 TopK configs (sae-lens handle_pre_6_0_config) keep k in activation_fn_kwargs
        architecture, k = "topk", (cfg.get("activation_fn_kwargs") or {}).get("k", k)
    # sae-lens's dataclass default is True, so an absent key means "subtract"
    apply_b_dec = bool(cfg.get("apply_b_dec_to_input", True))
    d_in = int(_require(cfg, "d_in", cfg_path))
    d_sae = int(_require(cfg, "d_sae", cfg_path))
    # built as a dict and validated: the same checks as any user-written config (k ≤ d_sae)
    fields: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae, "d_out": d_in}
    if architecture in ("topk", "topk_transcoder", "topk_skip_transcoder"):
        if k is None:
            raise ValueError(f"{cfg_path}: architecture {architecture!r} needs 'k'")
        fields["k"] = int(k)

    if architecture == "standard":
        # Anthropic-style b_dec subtraction is our standard_anthropic (which also keeps
        # unit-norm decoder rows, but only while training)
        fields["architecture"] = "standard_anthropic" if apply_b_dec else "standard"
        return SAEConfig.model_validate(fields), apply_b_dec
    if architecture in ("jumprelu", "topk"):
        fields["architecture"] = architecture
        return SAEConfig.model_validate(fields), apply_b_dec
    if architecture in _TRANSCODER_IMPORT:
        activation, skip = _TRANSCODER_IMPORT[architecture]
        d_out = int(cfg.get("d_out", d_in))
        hook_in, hook_out = metadata.get("hook_name"), metadata.get("hook_name_out")
        fields["activation"] = activation
        if skip and d_out == d_in and (hook_out is None or hook_out == hook_in):
            # same hook in and out: our skip SAE (functionally identical to a skip transcoder)
            fields["architecture"] = "skip"
        else:
            fields.update(architecture="transcoder", skip=skip, d_out=d_out)
        return SAEConfig.model_validate(fields), False  # sae-lens transcoders never subtract
    raise ValueError(
        f"{cfg_path}: unknown SAELens architecture {architecture!r}; SAE Studio loads "
        f"{', '.join(LOADABLE_ARCHITECTURES)}"
    )


@torch.no_grad()
def _convert_foreign_tensors(
    cfg: dict[str, Any], sae: SparseAutoencoder, tensors: dict[str, Tensor], apply_b_dec: bool
) -> dict[str, Tensor]:
    """Rewrite sae-lens parameters so our module computes the same function."""
    tensors = dict(tensors)
    if "scaling_factor" in tensors:
        # old sae-lens finetuning factor; all ones is a no-op that some exports carry
        if not torch.allclose(
            tensors["scaling_factor"], torch.ones_like(tensors["scaling_factor"])
        ):
            raise ValueError("finetuning scaling_factor ≠ 1 is not supported")
        del tensors["scaling_factor"]
    # do the arithmetic in at least float32, whatever the stored dtype
    tensors = {k: v.to(torch.promote_types(v.dtype, torch.float32)) for k, v in tensors.items()}
    if apply_b_dec and not sae.subtract_b_dec_from_input:
        # (x − b_dec)·W_enc + b_enc = x·W_enc + (b_enc − b_dec·W_enc): exact up to rounding
        tensors["b_enc"] = tensors["b_enc"] - tensors["b_dec"] @ tensors["W_enc"]
    if cfg.get("rescale_acts_by_decoder_norm"):
        # sae-lens TopK selects on π·‖W_dec,i‖ and decodes z/‖W_dec,i‖ (its fold_W_dec_norm)
        norms = tensors["W_dec"].norm(dim=-1)  # [d_sae]
        tensors["W_enc"] = tensors["W_enc"] * norms
        tensors["b_enc"] = tensors["b_enc"] * norms
        tensors["W_dec"] = tensors["W_dec"] / norms[:, None]
    if "threshold" in tensors:
        # sae-lens: ReLU(π)·1[π > θ] = π·1[π > max(θ, 0)], ours: π·1[π > θ] — clamping is exact
        if bool((tensors["threshold"] < 0).any()):
            logger.info("clamping negative SAELens JumpReLU thresholds to 0 (same function)")
        tensors["threshold"] = tensors["threshold"].clamp_min(0.0)
    return tensors


@torch.no_grad()
def _assign(sae: SparseAutoencoder, tensors: dict[str, Tensor], weights_path: Path) -> None:
    """Copy tensors into the module, refusing missing, unexpected or mis-shaped ones."""
    expected = _expected_tensor_names(sae)
    missing, unexpected = expected - tensors.keys(), tensors.keys() - expected
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: tensors do not match a {saelens_architecture(sae)} SAE "
            f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})"
        )
    params: dict[str, Tensor] = dict(sae.named_parameters())
    for name in expected - {"threshold"}:
        if params[name].shape != tensors[name].shape:
            raise ValueError(
                f"{weights_path}: {name} has shape {tuple(tensors[name].shape)}, "
                f"expected {tuple(params[name].shape)}"
            )
        params[name].copy_(tensors[name])
    if "threshold" in expected:
        threshold = tensors["threshold"]
        if threshold.shape != (sae.d_sae,):
            raise ValueError(
                f"{weights_path}: threshold has shape {tuple(threshold.shape)}, "
                f"expected ({sae.d_sae},)"
            )
        if isinstance(sae, BatchTopKSAE):
            # one global θ was expanded on export; anything else was edited by hand
            if not torch.equal(threshold, threshold[0].expand_as(threshold)):
                raise ValueError(f"{weights_path}: a BatchTopK threshold must be uniform")
            sae.get_buffer("threshold_ema").copy_(threshold[0])
            sae.get_buffer("threshold_steps").fill_(SETTLED_STEPS)  # a finished θ
        else:
            sae.get_parameter("threshold").copy_(threshold)


def load_saelens(path: str | Path) -> SparseAutoencoder:
    """Load an SAELens-format folder into an SAE Studio module, in eval mode.

    Our own exports are rebuilt exactly from the ``"saestudio"`` config key. Folders written
    by sae-lens are mapped: ``standard`` → ``standard`` (or ``standard_anthropic`` when
    ``apply_b_dec_to_input``), ``jumprelu``, ``topk`` and the transcoder family → our
    ``transcoder`` (``skip`` when a skip transcoder reads and writes the same hook). Where
    our module has no slot for a sae-lens option the weights are rewritten to the same
    function: ``apply_b_dec_to_input`` on TopK/JumpReLU is folded into ``b_enc``,
    ``rescale_acts_by_decoder_norm`` into the encoder and decoder, negative thresholds are
    clamped to 0. Run-time ``normalize_activations`` is not part of the module (a warning
    says so). Call ``.train()`` on the result to fine-tune it.

    Raises ``FileNotFoundError`` for a missing folder or file and ``ValueError`` for an
    unknown architecture or inconsistent tensors.
    """
    folder = Path(path)
    cfg = read_saelens_cfg(folder)
    cfg_path, weights_path = folder / CFG_FILENAME, folder / WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"{weights_path} not found: an SAELens folder needs {WEIGHTS_FILENAME}"
        )
    dtype_name = str(cfg.get("dtype", "float32"))
    if dtype_name not in _STR_TO_DTYPE:
        raise ValueError(f"{cfg_path}: unknown dtype {dtype_name!r}")
    tensors = load_file(str(weights_path))  # safetensors only: never unpickle a user's file

    if SAESTUDIO_KEY in cfg:
        sae_cfg = SAEConfig.model_validate(cfg[SAESTUDIO_KEY])
        sae = build_sae(sae_cfg)
        architecture = cfg.get("architecture")
        if architecture != saelens_architecture(sae):
            raise ValueError(
                f"{cfg_path}: architecture {architecture!r} contradicts the saved SAE Studio "
                f"config (which exports as {saelens_architecture(sae)!r})"
            )
    else:
        sae_cfg, apply_b_dec = _foreign_config(cfg, cfg_path)
        sae = build_sae(sae_cfg)
        tensors = _convert_foreign_tensors(cfg, sae, tensors, apply_b_dec)

    normalize = cfg.get("normalize_activations", "none")
    if normalize not in ("none", None):
        logger.warning(
            "%s: normalize_activations=%r is not applied by the loaded module; "
            "normalise inputs yourself",
            cfg_path,
            normalize,
        )
    _assign(sae, tensors, weights_path)
    sae.to(_STR_TO_DTYPE[dtype_name])
    return sae.eval()
