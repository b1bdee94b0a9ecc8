"""``saestudio info``: describe an SAE folder, checkpoint or run folder as JSON."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` subcommand to ``saestudio``'s subparsers."""
    p = subparsers.add_parser("info", help="describe an SAE folder, checkpoint or run folder")
    p.add_argument("path")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from saestudio.training.export import describe

    print(json.dumps(describe(args.path), indent=2))
    return 0
