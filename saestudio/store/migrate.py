"""Run the packaged Alembic migrations from Python (the service upgrades at start)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from saestudio.store.db import make_engine, normalize_url

log = logging.getLogger(__name__)
INI = Path(__file__).with_name("alembic.ini")


def alembic_config(url: str | None = None) -> Config:
    """The packaged configuration; ``url`` None → ``Settings.db_url``."""
    cfg = Config(str(INI))
    if url is not None:
        # attributes, not set_main_option: ConfigParser would read '%' in a password
        cfg.attributes["url"] = normalize_url(url).render_as_string(hide_password=False)
    return cfg


def upgrade(url: str | None = None, rev: str = "head") -> None:
    """Migrate the database at ``url`` up to ``rev`` (creating it if it is SQLite)."""
    log.info("migrating database to %s", rev)
    command.upgrade(alembic_config(url), rev)


def downgrade(url: str | None = None, rev: str = "base") -> None:
    """Migrate down to ``rev``; ``base`` drops every table the migrations created."""
    log.info("downgrading database to %s", rev)
    command.downgrade(alembic_config(url), rev)


def current_revision(url: str) -> str | None:
    """The revision the database is at (None: never migrated)."""
    engine = make_engine(url, pool=False)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision shipped with this version of the package."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
