"""What ``saestudio serve`` and ``saestudio worker`` check before they start, so that a
setting that cannot work is one ``saestudio: error:`` line naming it (exit code 2), never
a traceback from deep inside uvicorn, SQLAlchemy or Celery: a token when bound beyond
localhost, a writable data dir, a free port, a reachable database and broker."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import uuid
from urllib.parse import urlsplit

from saestudio.settings import Settings, get_settings, is_loopback


class StartupRefused(ValueError):
    """A setting that cannot work; the message starts with the setting's name(s)."""


def add_data_dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="root of everything the studio stores (datasets, runs, the SQLite database and "
        "broker); every path a request names resolves inside it [default: "
        "SAESTUDIO_DATA_DIR or ./data]",
    )


def settings_from(args: argparse.Namespace, **flags: object) -> Settings:
    """The environment's settings with the command-line flags that were given on top
    (validated: a relative ``--data-dir`` is made absolute). ``--data-dir`` is also put
    into the environment, for the processes this one starts or becomes."""
    given = {k: v for k, v in flags.items() if v is not None}
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None:
        given["data_dir"] = data_dir
    if not given:
        return get_settings()
    settings = Settings(**given)  # type: ignore[arg-type]
    os.environ["SAESTUDIO_DATA_DIR"] = str(settings.data_dir)
    return settings


def check_token(settings: Settings) -> None:
    if not is_loopback(settings.host) and not settings.api_token:
        raise StartupRefused(
            f"--host / SAESTUDIO_HOST: {settings.host} is reachable beyond localhost; "
            "set SAESTUDIO_API_TOKEN (clients then send it as a Bearer token)"
        )


def check_data_dir(settings: Settings) -> None:
    """The data dir exists (made if missing) and this process can write in it."""
    where = f"--data-dir / SAESTUDIO_DATA_DIR: {settings.data_dir}"
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        probe = settings.data_dir / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StartupRefused(f"{where} is not a writable folder ({e.strerror or e})") from None


def check_port(settings: Settings) -> None:
    """Nothing else listens on host:port (uvicorn would fail after the worker started)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((settings.host, settings.port))
        except OSError as e:
            what = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e})"
            raise StartupRefused(
                f"--port / SAESTUDIO_PORT: {settings.host}:{settings.port} {what}"
            ) from None


def check_database(settings: Settings) -> None:
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    url = make_url(settings.db_url)
    shown = url.render_as_string(hide_password=True)
    args = {"connect_timeout": 5} if url.get_backend_name() == "postgresql" else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # any driver's error: say which setting, not the stack
        first = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise StartupRefused(
            f"SAESTUDIO_DATABASE_URL: cannot connect to {shown} ({first[0] if first else e})"
        ) from None
    finally:
        engine.dispose()


def check_broker(settings: Settings) -> None:
    from kombu import Connection

    from saestudio.jobs.celery_app import prepare_broker, sqlite_broker_path

    url = settings.celery_broker
    if sqlite_broker_path(url) is not None:
        try:
            prepare_broker(url)
        except Exception as e:
            raise StartupRefused(f"SAESTUDIO_BROKER_URL: cannot open {url} ({e})") from None
        return
    conn = Connection(url, connect_timeout=5)
    try:
        conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as e:
        parts = urlsplit(url)
        shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url
        raise StartupRefused(f"SAESTUDIO_BROKER_URL: cannot connect to {shown} ({e})") from None
    finally:
        conn.release()


def check_all(settings: Settings, *, serving: bool) -> None:
    """Every start-up check, cheapest first; :class:`StartupRefused` on the first that
    fails. ``serving``: the API too (token, port), not only a worker."""
    if serving:
        check_token(settings)
    check_data_dir(settings)
    if serving:
        check_port(settings)
    check_database(settings)
    check_broker(settings)


__all__ = ["StartupRefused", "add_data_dir_flag", "check_all", "settings_from"]
