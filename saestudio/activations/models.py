"""Load a Hugging Face model for activation extraction (SPEC §2.B "Models").

Any ``transformers`` model by hub name or local folder, in the dtype and on the device
the user chooses: causal LMs with ``AutoModelForCausalLM`` (their LM head serves the
downstream loss metric), encoders with ``AutoModel``. Local folders and cached hub
models load with ``HF_HUB_OFFLINE=1``; every failure is one line naming the flag.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# encoder families whose configs also map to a (randomly initialised) causal-LM head class
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "albert"}


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA, else Apple MPS, else CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device: {device!r} is not a device ({e})") from e


def model_ref(name_or_path: str) -> str:
    """A local folder's absolute path, or the hub name as given."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"--model: no such folder: {name_or_path}")
    return name_or_path


def load_model(name_or_path: str, dtype: str = "float32", device: str = "auto") -> nn.Module:
    """A Hugging Face model in eval mode on ``device``.

    Causal LMs load with ``AutoModelForCausalLM`` (the LM head is needed for the loss
    metric), encoders with ``AutoModel``. Works offline (``HF_HUB_OFFLINE=1``) for local
    folders and cached hub models.
    """
    from transformers import AutoModel, AutoModelForCausalLM

    ref = model_ref(name_or_path)
    if dtype not in DTYPES:
        raise ValueError(f"--model-dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    dev = resolve_device(device)
    try:
        config = _config(ref)
        model = None
        if _is_causal(config):
            try:
                model = AutoModelForCausalLM.from_pretrained(ref, dtype=DTYPES[dtype])
            except ValueError:  # no causal-LM class for this config: fall back to the body
                log.info("%s has no causal-LM class; loading it with AutoModel", ref)
        if model is None:
            model = AutoModel.from_pretrained(ref, dtype=DTYPES[dtype])
    except OSError as e:
        raise _cannot_load(name_or_path, e) from e
    if getattr(model.config, "use_cache", False):
        model.config.use_cache = False  # no KV cache: it is memory and time for nothing here
    model = model.to(dev)  # type: ignore[arg-type]  # transformers' stub types .to() narrowly
    return model.eval()


def _config(ref: str) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(ref)


def _is_causal(config: Any) -> bool:
    """Whether :func:`load_model` loads this config as a causal LM (LM head included)."""
    archs = config.architectures or []
    if archs:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    return config.model_type not in ENCODER_TYPES


def _cannot_load(name_or_path: str, e: OSError) -> FileNotFoundError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return FileNotFoundError(
        f"--model: cannot load {name_or_path!r} (not a local model folder, and not "
        f"available from the Hugging Face hub or its cache): {first}"
    )


def model_on_meta(name_or_path: str) -> nn.Module:
    """The module tree :func:`load_model` would build, from the model's config alone on
    the meta device: no weights are read or allocated (what the API checks hooks and
    widths against before it queues an on-the-fly training)."""
    from transformers import AutoModel, AutoModelForCausalLM

    ref = model_ref(name_or_path)
    try:
        config = _config(ref)
    except OSError as e:
        raise _cannot_load(name_or_path, e) from e
    with torch.device("meta"):
        if _is_causal(config):
            try:
                return AutoModelForCausalLM.from_config(config).eval()
            except ValueError:
                pass
        return AutoModel.from_config(config).eval()


def max_positions(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
