"""``saestudio eval``: the core metrics of a saved SAE (SPEC §2.H) and, with a causal
LM, the downstream metric (SPEC §2.C).

    saestudio eval runs/x/sae --activations acts/ [--hook resid_post.3] [--rows 16384]
    saestudio eval runs/x/sae --model gpt2 --dataset text.txt [--hook resid_post.3]

Without a model, the core metrics of :mod:`saestudio.training.evaluation` (explained
variance, MSE, cosine, l2 ratio, relative reconstruction bias, L0/L1, dead/dense counts,
encoder/decoder cosines) on the last ``--rows`` rows of an activation dataset or
.npy/.safetensors file (the rows a training run holds out). With a model and text: the
same metrics on the hook's activations over that text, plus CE clean / spliced /
zero-ablated, CE loss recovered and KL. A table, or JSON with ``--json``. The hook, the
target hook of a transcoder and the model default to the SAE's ``cfg.json`` metadata.
Registered by :func:`register` on the main parser.
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
        help="core metrics of an SAE on activations; CE loss recovered and KL on a causal LM",
        description="Core metrics (explained variance, MSE, cosine, l2 ratio, relative "
        "reconstruction bias, L0, L1, dead/dense latents, encoder/decoder cosines) on "
        "--activations, or on the hook's activations over --dataset text. With a causal "
        "LM, also run it three times: clean, with the SAE's reconstruction spliced in at its "
        "hook, and with the hook zero-ablated; print next-token CE of each, CE loss "
        "recovered = (zero − spliced)/(zero − clean), and KL(clean ‖ spliced).",
    )
    p.add_argument("sae", metavar="SAE_DIR", help="SAELens folder, checkpoint or run folder")
    p.add_argument("--model", help="HF hub name or local folder [default: the SAE's model_name]")
    p.add_argument(
        "--dataset",
        help="with a model: demo:pydoc, a local .txt/.jsonl/.parquet/.csv file or folder, or a "
        "hub dataset",
    )
    p.add_argument(
        "--activations",
        help="core metrics without a model: an activation dataset folder (rows of --hook) or "
        "an [N, d] .npy/.safetensors file or folder of shards",
    )
    p.add_argument("--targets", help="transcoders on plain files: the paired target rows")
    p.add_argument(
        "--rows", type=int, default=16384, help="--activations: the last N rows [default: 16384]"
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


def _last_rows(path: str, hook: str | None, n: int) -> torch.Tensor:
    from saestudio.activations.manifest import open_hook
    from saestudio.activations.store import ArrayDataset
    from saestudio.training.sources import is_activation_dataset

    if is_activation_dataset(path):
        if not hook:
            raise ValueError("--hook: required to pick the activation dataset's rows")
        data = open_hook(path, hook)
    else:
        data = ArrayDataset(path)
    return data.read(max(0, len(data) - n), len(data)).float()


def _normalised(
    x: torch.Tensor, y: torch.Tensor | None, normalize: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SAELens's run-time ``constant_norm_rescale`` (the only one exports keep)."""
    if normalize != "constant_norm_rescale":
        return x, y
    coeff = math.sqrt(x.shape[1]) / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x * coeff, None if y is None else y * coeff


def _hook_rows(
    model: Any, ids: torch.Tensor, hooks: list[str], batch_size: int
) -> list[torch.Tensor]:
    """The activations at ``hooks`` over ``ids`` (one clean pass), ``[tokens, d]`` each."""
    import torch

    from saestudio.activations.downstream import _hooks
    from saestudio.activations.hookpoints import resolve_hook

    got: list[list[torch.Tensor]] = [[] for _ in hooks]

    def keep(i: int) -> Any:
        def read(x: torch.Tensor) -> torch.Tensor:
            got[i].append(x.detach().reshape(-1, x.shape[-1]).float().cpu())
            return x

        return read

    edits = [(resolve_hook(model, h), keep(i)) for i, h in enumerate(hooks)]
    device = next(model.parameters()).device
    with torch.no_grad(), _hooks(model, edits):
        for start in range(0, ids.shape[0], batch_size):
            model(input_ids=ids[start : start + batch_size].to(device))
    return [torch.cat(rows) for rows in got]


def _core(sae: SparseAutoencoder, x: torch.Tensor, y: torch.Tensor | None, cfg: dict) -> dict:
    from saestudio.training.evaluation import batched, core_metrics

    x, y = _normalised(x, y, cfg.get("normalize_activations") or "none")
    return core_metrics(sae, batched(x, y, 4096))


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from saestudio.activations.downstream import evaluate_downstream

    for flag in ("contexts", "context_length", "batch_size", "rows"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')}: must be at least 1")
    sae, cfg = load_sae_for_eval(args.sae)
    meta = cfg.get("metadata") or {}
    if args.activations:  # core metrics on stored rows; no model needed
        hook = args.hook or meta.get("hook_name")
        x = _last_rows(args.activations, hook, args.rows)
        y = None
        if sae.cfg.is_transcoder:
            target = args.target_hook or meta.get("hook_name_out")
            src = args.targets or args.activations
            if not (args.targets or target):
                raise ValueError("--targets: a transcoder needs its target rows (or --target-hook)")
            y = _last_rows(src, target, args.rows)
        _print({"sae": str(args.sae), "activations": args.activations, **_core(sae, x, y, cfg)},
               args.json)  # fmt: skip
        return 0
    if not args.dataset:
        raise ValueError("--dataset: give text for the model (or --activations for core metrics)")
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
    from saestudio.activations.downstream import check_causal_lm

    check_causal_lm(model)  # before the capture pass: the clear message for an encoder
    rows = _hook_rows(model, ids, [hook, *([target] if target else [])], args.batch_size)
    core = _core(sae, rows[0], rows[1] if target else None, cfg)
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
    info.update(core)
    _print(info, args.json)
    return 0


def _print(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        # NaN (zero ablation costs nothing) is not JSON: null
        clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in info.items()}
        print(json.dumps(clean, indent=2))
    else:
        _print_table(info)


__all__ = ["cmd_eval", "load_sae_for_eval", "register"]
