"""Helpers for the API tests: reading the SQLite broker, a valid training body."""

from __future__ import annotations

import base64
import json
import sqlite3
from typing import Any

from store_helpers import config

from saestudio.settings import Settings

API = "/api/v1"


def sent_tasks(settings: Settings) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message waiting in the SQLite broker."""
    path = settings.data_dir / "broker.db"
    if not path.exists():
        return []
    con = sqlite3.connect(path)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        if "kombu_message" not in tables:  # nothing was ever sent
            return []
        payloads = [row[0] for row in con.execute("SELECT payload FROM kombu_message")]
    finally:
        con.close()
    out = []
    for raw in payloads:
        msg = json.loads(raw)
        body = json.loads(_decode(msg["body"], msg["properties"]["body_encoding"]))
        out.append((msg["headers"]["task"], body[0]))
    return out


def _decode(body: str, encoding: str) -> str:
    return base64.b64decode(body).decode() if encoding == "base64" else body


def train_body(**kw: Any) -> dict[str, Any]:
    cfg = config().model_dump(mode="json", exclude_defaults=True)
    cfg.update(kw)
    return {"name": "run one", "config": cfg}
