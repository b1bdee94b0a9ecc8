"""``saestudio extract``: write an activation dataset from a model and a text source.

The flags are generated from :class:`~saestudio.activations.extract.ExtractConfig`
(:mod:`saestudio.cli.flags`), so the command line and the library cannot drift apart. Errors are raised as
``ValueError``/``DataError``/``FileNotFoundError``/``HookError`` (or pydantic's
``ValidationError``) with one-line messages; ``saestudio.cli.main`` prints them.
"""

from __future__ import annotations

import argparse
from typing import Any

from saestudio.cli.flags import add_config_flags, given_fields

EXAMPLE = (
    "example: saestudio extract --model PATH_OR_NAME --dataset demo:pydoc "
    "--hooks resid_post.3,mlp_out.3 --context-length 128 --max-tokens 200000 "
    "--dtype float16 --out acts/minilm-l3"
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``extract`` subcommand to ``saestudio``'s subparsers."""
    from saestudio.activations.config import ExtractConfig

    p = subparsers.add_parser(
        "extract",
        help="extract model activations into an activation dataset",
        description="Run a Hugging Face model over text and store the activations at one or "
        "more hooks (one forward pass, stopped after the last hooked layer): sharded "
        ".npy/.safetensors files, the token ids, and a manifest.json with norm statistics. "
        "Interrupted? Run the same command again: it continues after the last stored shard.",
        epilog=EXAMPLE,
    )
    add_config_flags(p.add_argument_group("extraction (ExtractConfig)"), ExtractConfig)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    """The validated ``ExtractConfig`` of parsed flags (missing required ones are named)."""
    from saestudio.activations.config import ExtractConfig

    return ExtractConfig.model_validate(given_fields(args, ExtractConfig))


def cmd_extract(args: argparse.Namespace) -> int:
    from saestudio.activations.extract import extract

    cfg = config_from_args(args)
    try:
        m = extract(cfg, progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; the shards stored so far are kept in {cfg.out}. "
            "Run the same command again to continue.",
        )
        return 130
    hooks = ", ".join(f"{h} (d={info.d})" for h, info in m.hooks.items())
    short = "" if m.contexts == m.target_contexts else " (the text ran out)"
    print(
        f"done: {m.contexts} contexts × {m.context_length} tokens{short}, {m.rows:,} rows "
        f"in {len(m.shards)} shards, {m.storage_dtype}\n"
        f"hooks: {hooks}\n"
        f"activation dataset: {cfg.out}  (train with: saestudio train --activations {cfg.out} "
        f"--hook {next(iter(m.hooks))} ...)"
    )
    return 0
