"""Load a Hugging Face model for activation extraction (SPEC §2.B "Models").

Any ``transformers`` model by hub name or local folder, in the dtype and on the device
the user chooses: causal LMs with ``AutoModelForCausalLM`` (their LM head serves the
downstream loss metric), encoders with ``AutoModel``. Local folders and cached hub
models load with ``HF_HUB_OFFLINE=1``; every failure is one line naming the flag.
"""

from __future__ import annotations

import logging
from pathlib import Path

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
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    ref = model_ref(name_or_path)
    if dtype not in DTYPES:
        raise ValueError(f"--model-dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    dev = resolve_device(device)
    try:
        config = AutoConfig.from_pretrained(ref)
        archs = config.architectures or []
        if archs:
            causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
        else:
            causal = config.model_type not in ENCODER_TYPES
        model = None
        if causal:
            try:
                model = AutoModelForCausalLM.from_pretrained(ref, dtype=DTYPES[dtype])
            except ValueError:  # no causal-LM class for this config: fall back to the body
                log.info("%s has no causal-LM class; loading it with AutoModel", ref)
        if model is None:
            model = AutoModel.from_pretrained(ref, dtype=DTYPES[dtype])
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(
            f"--model: cannot load {name_or_path!r} (not a local model folder, and not "
            f"available from the Hugging Face hub or its cache): {first}"
        ) from e
    if getattr(model.config, "use_cache", False):
        model.config.use_cache = False  # no KV cache: it is memory and time for nothing here
    model = model.to(dev)  # type: ignore[arg-type]  # transformers' stub types .to() narrowly
    return model.eval()


def max_positions(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
