"""``saestudio serve``: the API under uvicorn, plus (unless ``--no-worker``) an embedded
Celery worker that is stopped — gracefully, so a running job checkpoints — on exit."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand to ``saestudio``'s subparsers."""
    p = subparsers.add_parser(
        "serve",
        help="run the web API (and a local job worker)",
        description="Serve the HTTP/WebSocket API on SAESTUDIO_HOST:SAESTUDIO_PORT. Unless "
        "--no-worker, also start one local worker that runs queued trainings and "
        "extractions; it is stopped when the server exits. Binding beyond localhost "
        "requires SAESTUDIO_API_TOKEN.",
    )
    p.add_argument("--host", help="address to bind [default: SAESTUDIO_HOST or 127.0.0.1]")
    p.add_argument("--port", type=int, help="port [default: SAESTUDIO_PORT or 8000]")
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="API only: workers run elsewhere (celery -A saestudio.jobs.celery_app worker)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from saestudio.api.app import create_app
    from saestudio.settings import get_settings

    settings = get_settings()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    # built before the worker starts: a missing token fails fast, with nothing to clean up
    app = create_app(settings)
    worker = None
    if not args.no_worker:
        from saestudio.jobs.embedded import start_worker

        worker = start_worker(settings)
        log.info("embedded worker started (pid %s)", worker.pid)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port)
    finally:
        if worker is not None:
            from saestudio.jobs.embedded import stop_worker

            stop_worker(worker)
    return 0
