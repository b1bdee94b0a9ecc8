"""``saestudio inspect``: per-latent statistics, examples in context and the logit lens.

    saestudio inspect runs/demo --activations acts/demo --out runs/demo/inspection

One SAE (a SAELens folder, a checkpoint, a one-SAE run) is written straight into
``--out``; a run with several SAEs (hooks, sweeps) into ``--out/<label>/``, all from one
pass over the rows. The output format is documented in :mod:`saestudio.features`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` subcommand to ``saestudio``'s subparsers."""
    p = subparsers.add_parser(
        "inspect",
        help="what did the SAE learn: per-latent stats, top/quantile examples, logit lens",
        description="One pass of an SAE (or every SAE of a run) over an activation dataset: "
        "writes summary.json and latents.jsonl (density, mean/max activation, log10 "
        "histogram, top and quantile-band examples in context, the logit lens for causal "
        "LMs). Memory does not grow with the number of rows.",
    )
    p.add_argument("sae", metavar="SAE", help="SAELens folder, checkpoint or run folder")
    p.add_argument("--activations", required=True, help="activation dataset (saestudio extract)")
    p.add_argument("--out", required=True, help="folder to write the inspection into")
    p.add_argument("--hook", help="dataset hook to read [default: the SAE's hook_name]")
    p.add_argument(
        "--rows", help="N (the first N rows) or A:B (rows A to B−1) [default: every row]"
    )
    p.add_argument("--top", type=int, default=20, help="top examples per latent [default: 20]")
    p.add_argument("--window", type=int, default=8, help="context tokens each side [default: 8]")
    p.add_argument("--bands", type=int, default=5, help="activation-quantile bands [default: 5]")
    p.add_argument("--per-band", type=int, default=5, help="examples per band [default: 5]")
    p.add_argument("--batch-size", type=int, default=4096, help="rows per batch [default: 4096]")
    p.add_argument("--device", default="cpu", help="torch device [default: cpu]")
    p.add_argument("--neuronpedia", metavar="DIR", help="also write Neuronpedia's upload layout")
    p.add_argument(
        "--labels", metavar="FILE.json", help='{"latent": "label"} to export as explanations'
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_inspect)


def parse_rows(value: str | None) -> tuple[int, int] | None:
    """``N`` → (0, N); ``A:B`` → (A, B)."""
    if value is None:
        return None
    try:
        if ":" in value:
            a, b = value.split(":", 1)
            return int(a), int(b)
        return 0, int(value)
    except ValueError:
        raise ValueError(f"--rows: {value!r} is not N or A:B") from None


def _labels(path: str | None) -> dict[int, str] | None:
    if path is None:
        return None
    try:
        raw = json.loads(Path(path).read_text())
        return {int(k): str(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"--labels: {path} is not a JSON object of latent → label ({e})") from e


def _is_causal(ref: str) -> bool:
    """Whether the model has an LM head to take the unembedding from (the rule of
    :func:`~saestudio.activations.models.load_model`), read from its config alone."""
    from transformers import AutoConfig

    from saestudio.activations.models import ENCODER_TYPES, model_ref

    config = AutoConfig.from_pretrained(model_ref(ref))
    if config.architectures:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures)
    return config.model_type not in ENCODER_TYPES


def _model_parts(model: str) -> tuple[Any, Any]:
    """The dataset's tokenizer (required: it decodes the examples) and, for causal LMs,
    the unembedding (None for encoders, or when the weights cannot be loaded)."""
    from saestudio.activations.models import load_model
    from saestudio.activations.text_data import load_tokenizer
    from saestudio.features import unembedding

    try:
        tokenizer = load_tokenizer(model)
        causal = _is_causal(model)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"--activations: cannot load the tokenizer of the dataset's model {model!r}: {e}"
        ) from e
    if not causal:
        return tokenizer, None
    try:
        return tokenizer, unembedding(load_model(model, "float32", "cpu"))
    except (OSError, ValueError) as e:
        print(f"saestudio: no logit lens ({e})", file=sys.stderr)
        return tokenizer, None


def cmd_inspect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from saestudio.activations.manifest import open_activation_dataset
    from saestudio.features import inspect_sae, inspect_saes, run_saes, write_neuronpedia

    rows = parse_rows(args.rows)
    labels = _labels(args.labels)
    saes = run_saes(args.sae)
    manifest = open_activation_dataset(args.activations)
    tokenizer, unembed = _model_parts(manifest.model)
    bar = None if args.quiet else tqdm(unit="row", unit_scale=True, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    kw: dict[str, Any] = dict(
        hook=args.hook, rows=rows, top_n=args.top, window=args.window, bands=args.bands,
        per_band=args.per_band, unembed=unembed, tokenizer=tokenizer,
        batch_size=args.batch_size, progress=progress, device=args.device,
    )  # fmt: skip
    try:
        if len(saes) == 1:
            summaries = {
                "": inspect_sae(next(iter(saes.values())), args.activations, args.out, **kw)
            }
        else:
            summaries = inspect_saes(saes, args.activations, args.out, **kw)
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was written", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    for name, s in summaries.items():
        folder = Path(args.out) / name
        print(
            f"{s.sae}: {s.d_sae} latents over {s.rows_read:,} rows of {s.hook} in {s.seconds:.1f} s"
            f" — {s.dead} dead, {s.dense} dense (>10 %) → {folder}"
        )
        if args.neuronpedia:
            np_root = Path(args.neuronpedia) / name if name else Path(args.neuronpedia)
            print(f"neuronpedia: {write_neuronpedia(folder, np_root, labels)}")
    return 0
