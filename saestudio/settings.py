"""One validated ``Settings`` for the service layers (store, jobs, api), from the
environment (``SAESTUDIO_*``) or a ``.env`` file. The ML core never reads it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAESTUDIO_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path("data"),
        description="Root of everything the studio stores: activation datasets, runs, the "
        "SQLite database and broker. Every user-given name or path resolves inside it.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default SQLite at DATA_DIR/saestudio.db. "
        "postgresql+psycopg://... for shared deployments.",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker; default kombu's SQLAlchemy transport on "
        "DATA_DIR/broker.db (nothing to install). redis://... for teams.",
    )
    queue: str = Field("saestudio", description="Celery queue the jobs go to.")
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")
    api_token: str | None = Field(
        None, description="Required as a Bearer token when bound beyond localhost."
    )
    inspect_rows: int = Field(
        8192,
        ge=0,
        description="Rows at the end of a run's activation dataset (where the trainer holds "
        "out its evaluation rows) that the worker inspects when the training completes "
        "(per-latent examples for the Features tab); 0 = no automatic inspection.",
    )
    prompt_tokens: int = Field(
        512, ge=1, description="Longest text (in tokens) the prompt search runs."
    )
    max_upload_mb: int = Field(16, ge=1, description="Largest accepted upload (templates).")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'saestudio.db'}"

    @property
    def celery_broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
