"""``saestudio eval``: the downstream metric of a saved SAE on a causal LM (SPEC §2.C).

    saestudio eval runs/x/sae --model gpt2 --dataset text.txt [--hook resid_post.3]

prints CE clean / spliced / zero-ablated, CE loss recovered and KL as a table (or JSON
with ``--json``). The hook, the target hook of a transcoder and the model default to the
SAE's ``cfg.json`` metadata. Registered by :func:`register` on the main parser.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from saestudio.sae.base import SparseAutoencoder


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand to ``saestudio``'s subparsers."""
    p = subparsers.add_parser(
        "eval",
        help="CE loss recovered and KL of an SAE spliced into a causal LM",
        description="Run a causal LM on text three times: clean, with the SAE's reconstruction "
        "spliced in at its hook, and with the hook zero-ablated; print next-token CE of each, "
        "CE loss recovered = (zero − spliced)/(zero − clean), and KL(clean ‖ spliced).",
    )
    p.add_argument("sae", metavar="SAE_DIR", help="SAELens folder, checkpoint or run folder")
    p.add_argument("--model", help="HF hub name or local folder [default: the SAE's model_name]")
    p.add_argument(
        "--dataset",
        required=True,
        help="demo:pydoc, a local .txt/.jsonl/.parquet/.csv file or folder, or a hub dataset",
    )
    p.add_argument("--split", default="train", help="hub datasets: split [default: train]")
    p.add_argument("--text-column", default="text", help="tables: text column [default: text]")
    p.add_argument("--hook", help="hook to splice at [default: the SAE's hook_name]")
    p.add_argument(
        "--target-hook", help="transcoders: hook they replace [default: the SAE's hook_name_out]"
    )
    p.add_argument("--contexts", type=int, default=64, help="contexts to evaluate [default: 64]")
    p.add_argument(
        "--context-length", type=int, default=128, help="tokens per context [default: 128]"
    )
    p.add_argument("--batch-size", type=int, default=8, help="contexts per forward [default: 8]")
    p.add_argument("--device", help="torch device [default: cuda if available, else cpu]")
    p.add_argument(
        "--dtype", choices=["float32", "float16", "bfloat16"], default="float32", help="model dtype"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_eval)


def load_sae_for_eval(path: str | Path) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """The SAE taking raw activations, plus its ``cfg.json`` (metadata, normalisation).

    A checkpoint holds the SAE in normalised space; it is exported (scales folded in)
    to a temporary SAELens folder first, exactly as ``saestudio export`` would.
    """
    from saestudio.sae.saelens_load import load_saelens, read_saelens_cfg
    from saestudio.training.export import export_checkpoint

    folder = Path(path)
    if (folder / "cfg.json").is_file():
        return load_saelens(folder), read_saelens_cfg(folder)
    if not folder.exists():
        raise FileNotFoundError(f"SAE_DIR: no such folder: {folder}")
    with tempfile.TemporaryDirectory() as tmp:
        out = export_checkpoint(folder, Path(tmp) / "sae")
        return load_saelens(out), read_saelens_cfg(out)


def _text_contexts(args: argparse.Namespace, tokenizer: Any) -> torch.Tensor:
    """``[n, context_length]`` token ids (n ≤ ``--contexts``), packed as ``extract`` packs
    them (:mod:`saestudio.activations.text_data`: BOS first, documents joined by EOS)."""
    import torch

    from saestudio.activations.text_data import TextSource, iter_contexts

    source = TextSource(args.dataset, split=args.split, text_column=args.text_column)
    rows = list(islice(iter_contexts(source, tokenizer, args.context_length), args.contexts))
    if not rows:
        raise ValueError(f"--dataset: {args.dataset} holds fewer tokens than one context")
    return torch.tensor(rows, dtype=torch.long)


def _print_table(info: dict[str, Any]) -> None:
    width = max(len(k) for k in info)
    for key, value in info.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from saestudio.activations.downstream import evaluate_downstream

    for flag in ("contexts", "context_length", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')}: must be at least 1")
    sae, cfg = load_sae_for_eval(args.sae)
    meta = cfg.get("metadata") or {}
    model_name = args.model or meta.get("model_name")
    hook = args.hook or meta.get("hook_name")
    if not model_name:
        raise ValueError("--model: required (the SAE's cfg.json names no model_name)")
    if not hook:
        raise ValueError("--hook: required (the SAE's cfg.json names no hook_name)")
    target = args.target_hook or (meta.get("hook_name_out") if sae.cfg.is_transcoder else None)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from saestudio.activations.models import load_model
    from saestudio.activations.text_data import load_tokenizer

    # an encoder loads bare and evaluate_downstream refuses it with a clear message
    model, tokenizer = load_model(model_name, args.dtype, device), load_tokenizer(model_name)
    ids = _text_contexts(args, tokenizer)
    result = evaluate_downstream(
        model,
        sae,
        hook,
        ids,
        target_hook=target,
        batch_size=args.batch_size,
        normalize=cfg.get("normalize_activations") or "none",
    )
    info: dict[str, Any] = {"sae": str(args.sae), "model": model_name, "hook": hook}
    if target:
        info["target_hook"] = target
    info.update(result._asdict())
    if args.json:
        # NaN (zero ablation costs nothing) is not JSON: null
        clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in info.items()}
        print(json.dumps(clean, indent=2))
    else:
        _print_table(info)
    return 0


__all__ = ["cmd_eval", "load_sae_for_eval", "register"]
