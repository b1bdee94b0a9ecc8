"""``saestudio export``: write a checkpoint as a SAELens folder."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand to ``saestudio``'s subparsers."""
    p = subparsers.add_parser("export", help="export a checkpoint in the SAELens format")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument(
        "--out", required=True, help="folder to write cfg.json + sae_weights.safetensors"
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from saestudio.training.export import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} → {path} (SAELens format)")
    return 0
