"""SAELens 6.x on-disk format (SPEC §2.D): export SAEs and transcoders, load them back.

A folder holds ``cfg.json`` + ``sae_weights.safetensors`` (+ ``sparsity.safetensors``), with
tensor names and config keys exactly as ``sae_lens.SAE.load_from_disk`` (sae-lens 6.54.12)
reads them. sae-lens is *not* imported here: SAE Studio must run without it; the unit tests
load every export with the real sae-lens to prove the format.

How our models map to SAELens architectures (by class; "skip" = ``W_skip`` present, which
covers both our ``skip`` SAEs and skip transcoders)::

    our activation   SAE (no skip)   transcoder             skip SAE / skip transcoder
    relu             standard        transcoder             skip_transcoder
    jumprelu         jumprelu        jumprelu_transcoder    jumprelu_skip_transcoder
    batchtopk        jumprelu        jumprelu_transcoder    jumprelu_skip_transcoder
    matryoshka_btk   jumprelu        jumprelu_transcoder    jumprelu_skip_transcoder
    topk             topk            topk_transcoder (*)    topk_skip_transcoder (*)

(*) sae-lens 6 has no TopK transcoder class. These folders use the same tensor layout and a
``"k"`` key, but only SAE Studio (:func:`load_saelens`) loads them; ``SAE.load_from_disk``
refuses the unknown architecture.

BatchTopK exports its eval-mode rule: the global threshold θ (EMA of the smallest kept
activation) expanded to a per-latent ``threshold[d_sae]``, i.e. a JumpReLU. Batch-level
top-(k·batch) selection only exists during training and cannot be exported.

Semantics that match exactly (checked against the sae-lens source):

* ``standard``/``transcoder``: ReLU(x·W_enc + b_enc), sae-lens subtracts ``b_dec`` from the
  input only when ``apply_b_dec_to_input`` (written True only for our Anthropic-style SAE;
  transcoders never subtract, sae-lens refuses True for them).
* ``jumprelu*``: sae-lens computes ReLU(π)·1[π > θ]; ours computes π·1[π > θ]. Equal for
  θ ≥ 0, which our JumpReLU keeps by clamping after every step and BatchTopK by clamping
  its EMA. A negative θ would make ours emit negative activations sae-lens cannot
  reproduce; the exporter warns if it sees one.
* ``topk``: both keep the k largest pre-activations, then ReLU them.
* skip transcoders: sae-lens ``forward`` adds ``x @ W_skip.T``; ``decode`` alone does not,
  exactly like our ``decode``/``forward`` split.

``normalize_activations`` is only a label for sae-lens: ``load_from_disk`` applies
``constant_norm_rescale`` and ``layer_norm`` at run time but treats
``expected_average_only_in`` as identity, so fold a fixed input scale into the weights
(:meth:`SparseAutoencoder.fold_input_scaling`) and export with ``"none"``.

Our own :class:`~saestudio.sae.config.SAEConfig` is stored under the top-level key
``"saestudio"``; sae-lens filters unknown top-level keys out
(``filter_valid_dataclass_fields``), and :func:`load_saelens` uses it to rebuild the exact
module. Folders written by sae-lens itself (no such key) are mapped back to our configs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from saestudio.sae.base import SparseAutoencoder
from saestudio.sae.batchtopk import BatchTopKSAE
from saestudio.sae.config import Activation
from saestudio.sae.jumprelu import JumpReLUSAE
from saestudio.sae.matryoshka import MatryoshkaBatchTopKSAE
from saestudio.sae.standard import StandardSAE
from saestudio.sae.topk import TopKSAE

logger = logging.getLogger(__name__)

SAE_LENS_FORMAT_VERSION = "6.54.12"
"""``metadata.sae_lens_version`` we write: the sae-lens release this format was verified
against. It must be ≥ 6, or sae-lens rewrites the config as a legacy (pre-6) one."""

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
SPARSITY_FILENAME = "sparsity.safetensors"
SAESTUDIO_KEY = "saestudio"
"""Top-level cfg.json key holding our own SAEConfig (ignored by sae-lens)."""

NORMALIZE_ACTIVATIONS: tuple[str, ...] = (
    "none",
    "expected_average_only_in",
    "constant_norm_rescale",
    "layer_norm",
    "covariance_whitening",
)
"""Values sae-lens 6 accepts for ``normalize_activations`` (``SAEConfig.__post_init__``)."""

_DTYPE_TO_STR: dict[torch.dtype, str] = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}
# sae-lens also reads the "torch.float32" spelling (older exports); we only ever write the
# short one, because that is what its ``dtype_to_str`` produces.
_STR_TO_DTYPE: dict[str, torch.dtype] = {
    **{name: dtype for dtype, name in _DTYPE_TO_STR.items()},
    **{f"torch.{name}": dtype for dtype, name in _DTYPE_TO_STR.items()},
}

# (activation, has skip) → SAELens architecture, for transcoders and skip SAEs.
_TRANSCODER_ARCH: dict[tuple[str, bool], str] = {
    ("relu", False): "transcoder",
    ("relu", True): "skip_transcoder",
    ("jumprelu", False): "jumprelu_transcoder",
    ("jumprelu", True): "jumprelu_skip_transcoder",
    ("batchtopk", False): "jumprelu_transcoder",
    ("batchtopk", True): "jumprelu_skip_transcoder",
    ("matryoshka_batchtopk", False): "jumprelu_transcoder",
    ("matryoshka_batchtopk", True): "jumprelu_skip_transcoder",
    ("topk", False): "topk_transcoder",
    ("topk", True): "topk_skip_transcoder",
}
_SAE_ARCH: dict[str, str] = {
    "relu": "standard",
    "jumprelu": "jumprelu",
    "batchtopk": "jumprelu",
    "matryoshka_batchtopk": "jumprelu",
    "topk": "topk",
}
# SAELens transcoder architecture → (our activation, has skip), for importing.
_TRANSCODER_IMPORT: dict[str, tuple[Activation, bool]] = {
    "transcoder": ("relu", False),
    "skip_transcoder": ("relu", True),
    "jumprelu_transcoder": ("jumprelu", False),
    "jumprelu_skip_transcoder": ("jumprelu", True),
    "topk_transcoder": ("topk", False),
    "topk_skip_transcoder": ("topk", True),
}
LOADABLE_ARCHITECTURES: tuple[str, ...] = ("standard", "jumprelu", "topk", *_TRANSCODER_IMPORT)
"""Architectures :func:`load_saelens` understands in a folder without our ``saestudio`` key."""


# ---- helpers shared by export and import ----------------------------------------------------
def activation_of(sae: SparseAutoencoder) -> Activation:
    """The activation a module implements, read from its class (BatchTopK subclasses TopK,
    Anthropic subclasses Standard, so the order of the checks matters)."""
    if isinstance(sae, MatryoshkaBatchTopKSAE):
        return "matryoshka_batchtopk"
    if isinstance(sae, BatchTopKSAE):
        return "batchtopk"
    if isinstance(sae, TopKSAE):
        return "topk"
    if isinstance(sae, JumpReLUSAE):
        return "jumprelu"
    if isinstance(sae, StandardSAE):
        return "relu"
    raise ValueError(f"no SAELens mapping for {type(sae).__name__}")


def _is_transcoder_like(sae: SparseAutoencoder) -> bool:
    """Transcoders and skip SAEs both export in SAELens's transcoder layout."""
    return sae.cfg.is_transcoder or sae.W_skip is not None


def saelens_architecture(sae: SparseAutoencoder) -> str:
    """The SAELens ``architecture`` string this module exports as (see the module table)."""
    activation = activation_of(sae)
    if _is_transcoder_like(sae):
        return _TRANSCODER_ARCH[(activation, sae.W_skip is not None)]
    return _SAE_ARCH[activation]


def _expected_tensor_names(sae: SparseAutoencoder) -> set[str]:
    names = {"W_enc", "W_dec", "b_enc", "b_dec"}
    if sae.W_skip is not None:
        names.add("W_skip")
    if isinstance(sae, JumpReLUSAE | BatchTopKSAE):
        names.add("threshold")
    return names


def _atomic_write(target: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file and rename, so an interrupted export never leaves a
    truncated file that a later load would half-read."""
    tmp = target.with_name(target.name + ".tmp")
    write(tmp)
    os.replace(tmp, target)


def _major_version(version: Any) -> int | None:
    """Leading integer of a version string ("6.54.12" → 6); None when unparsable."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


# ---- export ---------------------------------------------------------------------------------
def _export_tensors(sae: SparseAutoencoder) -> dict[str, Tensor]:
    """State dict in SAELens names. ``threshold`` is the inference threshold (never
    ``log_threshold``): JumpReLU's θ or BatchTopK's global θ expanded to ``[d_sae]``."""
    # the input centre c the encoder (and skip path) subtract is folded into the biases:
    # (x − c)·W_enc + b_enc = x·W_enc + (b_enc − c·W_enc); W_skip·(x − c) likewise into b_dec
    c = sae.get_buffer("input_centre").detach()
    b_enc, b_dec = sae.b_enc.detach(), sae.b_dec.detach()
    if bool(c.any()):
        b_enc = b_enc - c.to(sae.W_enc) @ sae.W_enc.detach()
        if sae.W_skip is not None:
            b_dec = b_dec - sae.W_skip.detach() @ c.to(sae.W_skip)
    tensors: dict[str, Tensor] = {
        "W_enc": sae.W_enc,  # [d_in, d_sae]
        "W_dec": sae.W_dec,  # [d_sae, d_out]
        "b_enc": b_enc,  # [d_sae]
        "b_dec": b_dec,  # [d_out]
    }
    if sae.W_skip is not None:
        tensors["W_skip"] = sae.W_skip  # [d_out, d_in]
    threshold = sae.inference_threshold()
    if threshold is not None:
        tensors["threshold"] = threshold  # [d_sae]
    # safetensors needs contiguous CPU tensors that share no storage (the expanded
    # BatchTopK threshold would otherwise be a stride-0 view)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def _build_metadata(
    sae: SparseAutoencoder,
    model_name: str | None,
    hook_name: str | None,
    hook_name_out: str | None,
    extra_metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    meta: dict[str, Any] = dict(extra_metadata or {})
    given = {"model_name": model_name, "hook_name": hook_name, "hook_name_out": hook_name_out}
    for key, value in given.items():
        if value is None:
            continue
        if key in meta and meta[key] != value:
            raise ValueError(
                f"extra_metadata[{key!r}] = {meta[key]!r} conflicts with {key}={value!r}"
            )
        meta[key] = value
    meta.setdefault("model_name", None)
    meta.setdefault("hook_name", None)
    if _is_transcoder_like(sae):
        # a skip SAE reads and writes the same hook
        if meta.get("hook_name_out") is None and not sae.cfg.is_transcoder:
            meta["hook_name_out"] = meta["hook_name"]
        meta.setdefault("hook_name_out", None)
        if meta["hook_name_out"] is None:
            logger.warning("transcoder export without hook_name_out: metadata will say null")
    version = meta.setdefault("sae_lens_version", SAE_LENS_FORMAT_VERSION)
    major = _major_version(version)
    if major is None or major < 6:
        raise ValueError(
            f"metadata sae_lens_version must be >= 6 (got {version!r}); "
            "sae-lens treats older versions as legacy configs"
        )
    return meta


def _check_sparsity(sparsity: Tensor, d_sae: int) -> Tensor:
    if sparsity.shape != (d_sae,):
        raise ValueError(f"sparsity: expected shape ({d_sae},), got {tuple(sparsity.shape)}")
    if not sparsity.is_floating_point() or torch.isnan(sparsity).any():
        raise ValueError("sparsity: must be a float tensor without NaN")
    # log10 of a firing frequency is ≤ 0; a positive value means raw densities were passed
    # (allow a hair above 0 for log10(density + eps) at density 1)
    if float(sparsity.max()) > 1e-6:
        raise ValueError(
            "sparsity: must be log10 feature density (all ≤ 0); got a maximum of "
            f"{float(sparsity.max()):.4g}. Pass torch.log10(density + 1e-10)."
        )
    return sparsity.detach().to("cpu", torch.float32).contiguous().clone()


def _warn_export_semantics(sae: SparseAutoencoder, normalize_activations: str) -> None:
    """Log what sae-lens will *not* reproduce, without refusing the export."""
    if isinstance(sae, BatchTopKSAE) and float(sae.get_buffer("threshold_ema")) < 0:
        logger.warning("BatchTopK has no threshold yet (never trained): exported as θ = 0")
    if isinstance(sae, JumpReLUSAE) and bool((sae.threshold < 0).any()):
        logger.warning(
            "JumpReLU has negative thresholds: sae-lens applies ReLU first, so those "
            "latents' negative activations will read as 0 there"
        )
    if normalize_activations == "expected_average_only_in":
        logger.warning(
            "normalize_activations='expected_average_only_in' is identity in "
            "sae_lens.SAE.load_from_disk: fold the input scale into the weights "
            "(fold_input_scaling) and export with 'none' to take raw activations"
        )


def save_saelens(
    sae: SparseAutoencoder,
    path: str | Path,
    *,
    model_name: str | None = None,
    hook_name: str | None = None,
    hook_name_out: str | None = None,
    normalize_activations: str = "none",
    sparsity: Tensor | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``sae`` as an SAELens 6.x folder and return the folder's path.

    Files: ``cfg.json``, ``sae_weights.safetensors`` and, when ``sparsity`` (log10 feature
    density per latent, shape ``[d_sae]``) is given, ``sparsity.safetensors`` with key
    ``"sparsity"``; a stale sparsity file from an earlier export into the same folder is
    removed so it cannot be mistaken for this model's.

    Architectures follow the module table. ``topk_transcoder`` / ``topk_skip_transcoder``
    folders load only in SAE Studio (sae-lens 6 has no TopK transcoder). ``model_name``,
    ``hook_name`` and (transcoders) ``hook_name_out`` go to ``metadata``, merged with
    ``extra_metadata``; for a skip SAE ``hook_name_out`` defaults to ``hook_name``.
    ``normalize_activations`` must be one of :data:`NORMALIZE_ACTIVATIONS`.
    """
    if normalize_activations not in NORMALIZE_ACTIVATIONS:
        raise ValueError(
            f"normalize_activations: must be one of {NORMALIZE_ACTIVATIONS}, "
            f"got {normalize_activations!r}"
        )
    if sae.W_enc.dtype not in _DTYPE_TO_STR:
        raise ValueError(
            f"dtype: SAELens stores {list(_DTYPE_TO_STR.values())}, not {sae.W_enc.dtype}"
        )
    transcoder_like = _is_transcoder_like(sae)
    if transcoder_like and sae.subtract_b_dec_from_input:
        # sae-lens transcoders refuse apply_b_dec_to_input (b_dec lives in the output space)
        raise ValueError("a transcoder or skip SAE cannot subtract b_dec from its input")
    # validate everything before the first write, so a refused export leaves the folder as it was
    log_density = None if sparsity is None else _check_sparsity(sparsity, sae.d_sae)
    _warn_export_semantics(sae, normalize_activations)

    architecture = saelens_architecture(sae)
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": _DTYPE_TO_STR[sae.W_enc.dtype],  # "float32", never str(torch.float32)
        "device": "cpu",
        "apply_b_dec_to_input": bool(sae.subtract_b_dec_from_input),
        "normalize_activations": normalize_activations,
    }
    if isinstance(sae, TopKSAE) and not isinstance(sae, BatchTopKSAE):
        cfg["k"] = sae.cfg.k
        if not transcoder_like:
            cfg["rescale_acts_by_decoder_norm"] = False  # ours selects on raw pre-acts
    if transcoder_like:
        cfg["d_out"] = sae.d_out
    cfg["metadata"] = _build_metadata(sae, model_name, hook_name, hook_name_out, extra_metadata)
    cfg[SAESTUDIO_KEY] = sae.cfg.model_dump(mode="json")

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = _export_tensors(sae)
    _atomic_write(out / WEIGHTS_FILENAME, lambda p: save_file(tensors, str(p)))
    sparsity_path = out / SPARSITY_FILENAME
    if log_density is not None:
        _atomic_write(sparsity_path, lambda p: save_file({"sparsity": log_density}, str(p)))
    elif sparsity_path.exists():
        logger.info("removing stale %s from an earlier export", sparsity_path)
        sparsity_path.unlink()
    # cfg.json last: a fresh folder is only loadable once every file is in place
    text = json.dumps(cfg, indent=2)
    _atomic_write(out / CFG_FILENAME, lambda p: p.write_text(text, encoding="utf-8"))
    logger.info("exported %s SAE to %s", architecture, out)
    return out
