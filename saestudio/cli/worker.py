"""``saestudio worker``: become a Celery worker for the studio's job queue."""

from __future__ import annotations

import argparse
import os
import sys

from saestudio.cli.preflight import add_data_dir_flag


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``worker`` subcommand to ``saestudio``'s subparsers."""
    p = subparsers.add_parser(
        "worker",
        help="run a job worker (Celery) for the studio",
        description="Run queued trainings and extractions, one at a time, from the queue in "
        "SAESTUDIO_QUEUE (default saestudio), with SAESTUDIO_DATABASE_URL, SAESTUDIO_BROKER_URL "
        "and SAESTUDIO_DATA_DIR (the data dir must be the same path on every machine). A "
        "training with num_devices N runs as torchrun with N processes on this worker. "
        "SIGTERM: the running job checkpoints and goes back to the queue. An unwritable data "
        "dir or an unreachable database or broker is refused with one line naming it "
        "(exit code 2).",
    )
    p.add_argument("--name", help="worker name (NAME@host); default saestudio-<random>")
    p.add_argument("--queue", help="queue to consume [default: SAESTUDIO_QUEUE or saestudio]")
    add_data_dir_flag(p)
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    """Become a Celery worker (solo pool: one job at a time) on SAESTUDIO_QUEUE, with the
    database, broker and data dir from the SAESTUDIO_* environment (``--data-dir`` over
    SAESTUDIO_DATA_DIR)."""
    import uuid

    from saestudio.cli.preflight import check_all, settings_from

    settings = settings_from(args)  # --data-dir reaches the Celery process via the env
    check_all(settings, serving=False)
    name = args.name or f"saestudio-{uuid.uuid4().hex[:8]}"
    cmd = [
        sys.executable, "-m", "celery", "-A", "saestudio.jobs.celery_app", "worker",
        "--pool=solo", "--concurrency=1", "-Q", args.queue or settings.queue,
        "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel=INFO",
    ]  # fmt: skip
    os.execv(sys.executable, cmd)  # signals (SIGTERM: warm shutdown) go straight to Celery
    return 0  # not reached
