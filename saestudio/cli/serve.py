"""``saestudio serve``: the API under uvicorn, plus (unless ``--no-worker``) an embedded
Celery worker that is stopped — gracefully, so a running job checkpoints — on exit."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saestudio.settings import Settings

from saestudio.cli.preflight import add_data_dir_flag

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand to ``saestudio``'s subparsers."""
    p = subparsers.add_parser(
        "serve",
        help="run the web API (and a local job worker)",
        description="Serve the HTTP/WebSocket API on SAESTUDIO_HOST:SAESTUDIO_PORT. Unless "
        "--no-worker, also start one local worker that runs queued trainings and "
        "extractions; it is stopped when the server exits, and after a crash the next "
        "start resumes at once what it was running. Binding beyond localhost requires "
        "SAESTUDIO_API_TOKEN. A setting that cannot work (no token, an unwritable data "
        "dir, a port in use, an unreachable database or broker) is refused with one "
        "line naming it (exit code 2).",
    )
    add_data_dir_flag(p)
    p.add_argument("--host", help="address to bind [default: SAESTUDIO_HOST or 127.0.0.1]")
    p.add_argument("--port", type=int, help="port [default: SAESTUDIO_PORT or 8000]")
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="API only: workers run elsewhere (celery -A saestudio.jobs.celery_app worker)",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="make sure an activation dataset named 'demo' exists (MiniLM resid_post.3 over the "
        "Python docs; extracted by the worker on first start) — what `make run` uses",
    )
    p.set_defaults(func=cmd_serve)


def ensure_demo_dataset(settings: Settings) -> None:
    """Register (and queue the extraction of) the packaged demo dataset, once."""
    from saestudio.api.demo import ensure_demo_dataset as ensure
    from saestudio.demo import DEMO_HOOK, DEMO_NAME, DEMO_PATH
    from saestudio.jobs.celery_app import make_celery
    from saestudio.jobs.tasks import enqueue
    from saestudio.store.db import session_scope
    from saestudio.store.migrate import upgrade

    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        row, extract = ensure(session, settings)
        row_id = row.id
        session.commit()
    if not extract:
        return
    enqueue(make_celery(settings), "extraction", row_id)
    print(
        f"demo activation dataset '{DEMO_NAME}' queued (MiniLM {DEMO_HOOK} over the Python "
        f"docs, ~65k rows); open http://{settings.host}:{settings.port} or train on it with:\n"
        f"  curl -X POST http://{settings.host}:{settings.port}/api/v1/trainings "
        '-H \'content-type: application/json\' -d \'{"name": "demo topk", "config": '
        f'{{"activations": "{DEMO_PATH}", "hook": "{DEMO_HOOK}", '
        '"sae": {"architecture": "topk", "k": 32}, "steps": 500}}\''
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from saestudio.cli.preflight import check_all, settings_from

    settings = settings_from(args, host=args.host, port=args.port)
    check_all(settings, serving=True)  # one `saestudio: error:` line, before anything starts
    if args.demo:
        ensure_demo_dataset(settings)
    worker = None
    if not args.no_worker:
        from saestudio.jobs.embedded import start_local_worker

        # first, so that it boots while the API imports: it re-queues at once what the
        # previous server's local worker left running, and resumes it
        worker = start_local_worker(settings)
        log.info("embedded worker started (pid %s)", worker.pid)
    try:
        import uvicorn

        from saestudio.api.app import create_app

        uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
    finally:
        if worker is not None:
            from saestudio.jobs.embedded import stop_worker

            stop_worker(worker)
    return 0
