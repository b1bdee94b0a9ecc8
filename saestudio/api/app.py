"""The FastAPI application: migrations at startup, routers under ``/api/v1``, store
errors mapped to HTTP codes, and a bearer token when bound beyond localhost."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import text
from starlette.types import ASGIApp, Receive, Scope, Send

from saestudio import __version__
from saestudio.api import ws
from saestudio.api.deps import SettingsDep
from saestudio.api.live import LiveHub, WriteNotices
from saestudio.api.routes import checkpoints, datasets, features, studio, templates, trainings
from saestudio.api.schemas import Health
from saestudio.settings import Settings, get_settings, is_loopback
from saestudio.store import migrate
from saestudio.store.db import get_engine
from saestudio.store.repo import (
    BestCheckpointProtected,
    InvalidTransition,
    NameTaken,
    NotFound,
    StoreError,
)

API_PREFIX = "/api/v1"


class BearerAuth:
    """Pure ASGI middleware (so it covers WebSockets too): every request must carry
    ``Authorization: Bearer <token>``; a WebSocket without it is closed before accept."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._ok(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
            return
        body = json.dumps({"detail": "missing or wrong bearer token"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _ok(self, scope: Scope) -> bool:
        if not str(scope.get("path", "")).startswith(API_PREFIX):
            return True  # the web bundle: static files, no data (the page asks for the token)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"")
        if scope["type"] == "websocket" and not given:
            # browsers cannot set headers on a WebSocket: the token comes as ?token=
            query = parse_qs(scope.get("query_string", b"").decode())
            given = b"Bearer " + query.get("token", [""])[0].encode()
        scheme, _, token = given.partition(b" ")
        # constant-time: the comparison must not leak how much of a guess was right
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.token)


_STATUS: list[tuple[type[StoreError], int]] = [
    (NotFound, 404),
    (InvalidTransition, 409),
    (NameTaken, 409),
    (BestCheckpointProtected, 409),
]


async def _store_error(_request: Request, exc: Exception) -> JSONResponse:
    code = next((c for kind, c in _STATUS if isinstance(exc, kind)), 409)
    return JSONResponse({"detail": str(exc)}, status_code=code)


DESCRIPTION = """Train sparse autoencoders and transcoders; watch, control and export runs.

**Path policy** — every path or name a request gives, on every route (400 whose `detail`
starts with the field, e.g. `config.dataset: '/etc/passwd' is outside the data
directory`, otherwise):

- activation datasets, `targets`, text files (extraction and on-the-fly training) and
  output folders resolve inside the server's data directory (`--data-dir` /
  `SAESTUDIO_DATA_DIR`): relative paths are taken relative to it; `..`, absolute paths
  outside it, symlinks pointing out and URL-encoded spellings (`%2e%2e%2f`) are refused;
  accepted local paths are stored absolute;
- `model` is a Hugging Face hub name, a folder under `DATA_DIR/models`, or a folder under
  one of `SAESTUDIO_MODEL_ROOTS` (`:`-separated; default: the Hugging Face cache and the
  packaged demo model);
- dataset and template names are plain names (letters, digits, `_ . -`, space);
- the service picks each run's folder (`out_dir`); a training body's `out` is ignored.

A training that the worker would refuse at start (a sweep value, a hook the dataset or
model lacks) is a 422 naming the field at `POST /trainings`; nothing is queued for it.
"""

health = APIRouter(tags=["health"])


@health.get("/health", response_model=Health)
def get_health(settings: SettingsDep) -> Health:
    """Database reachable, broker kind (sqlite / redis / ...) and version."""
    try:
        with get_engine(settings.db_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        db_ok = True
    except Exception:  # any failure means "not ok"; the detail is in the server log
        db_ok = False
    scheme = settings.celery_broker.split("://", 1)[0]
    broker = scheme.split("+")[-1]
    return Health(
        status="ok" if db_ok else "degraded", db=db_ok, broker=broker, version=__version__
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: the environment). Refuses to build without a
    token when ``settings.host`` is not a loopback address."""
    settings = settings or get_settings()
    needs_token = not is_loopback(settings.host)
    if needs_token and not settings.api_token:
        raise RuntimeError(
            f"host {settings.host} is reachable beyond localhost: set SAESTUDIO_API_TOKEN"
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(settings.db_url)
        yield
        live.close()

    app = FastAPI(
        title="SAE Studio", version=__version__, lifespan=lifespan, description=DESCRIPTION
    )
    app.state.settings = settings
    app.state.celery = None
    live = app.state.live = LiveHub(settings.celery_broker)
    app.add_exception_handler(StoreError, _store_error)
    for router in (
        health,
        trainings.router,
        checkpoints.router,
        features.router,
        datasets.router,
        templates.router,
        studio.router,
        ws.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    mount_web(app)
    if live.redis_url is not None:  # every API process hears the writes of the others
        app.add_middleware(WriteNotices, broker_url=live.redis_url, prefix=API_PREFIX)
    if needs_token:
        assert settings.api_token is not None
        app.add_middleware(BearerAuth, token=settings.api_token)
    return app


WEB_DIR = Path(__file__).resolve().parent.parent / "web"
"""The built web studio (``frontend/`` → ``npm run build``), shipped as package data."""


def mount_web(app: FastAPI, web: Path = WEB_DIR) -> None:
    """Serve the web studio at ``/``: its files, and ``index.html`` for every other path
    outside the API (client-side routes such as ``/runs/3``). Without a build, ``/``
    says how to make one."""
    index = web / "index.html"

    @app.get("/{path:path}", include_in_schema=False, response_model=None)
    def web_file(path: str) -> FileResponse | JSONResponse:
        if path.startswith(API_PREFIX.lstrip("/")):
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if not index.is_file():
            return JSONResponse(
                {"detail": "the web studio is not built: run `make web` (or `make run`)"},
                status_code=404,
            )
        file = (web / path).resolve()
        if path and file.is_file() and file.is_relative_to(web):
            # hashed asset names: cache for a year; index.html never
            cache = (
                "public, max-age=31536000, immutable"
                if "/assets/" in file.as_posix()
                else "no-cache"
            )
            return FileResponse(file, headers={"cache-control": cache})
        return FileResponse(index, headers={"cache-control": "no-cache"})


def app_factory() -> FastAPI:
    """``uvicorn --factory saestudio.api.app:app_factory``: the app from the environment."""
    return create_app()
