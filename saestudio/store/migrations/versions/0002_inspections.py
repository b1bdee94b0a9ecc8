"""feature inspections, their indexed latents, and latent labels

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Matches ``Inspection``, ``InspectionLatent`` and ``LatentLabel`` in
``saestudio/store/models.py`` (the migration test compares them). Types spelled out, as
in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _job_columns(table: str) -> list[sa.Column | sa.CheckConstraint]:
    """As in 0001 (models.JobColumns)."""
    return [
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("control", sa.String(length=24), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("heartbeat_at", TIME, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("celery_task_id", sa.String(length=255), nullable=True),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'paused', 'completed', 'failed', 'cancelled')",
            name=op.f(f"ck_{table}_status"),
        ),
        sa.CheckConstraint(
            "control IS NULL OR control IN ('pause', 'stop', 'stop_and_finalize')",
            name=op.f(f"ck_{table}_control"),
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "inspections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("training_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("row_start", sa.BigInteger(), nullable=False),
        sa.Column("row_end", sa.BigInteger(), nullable=False),
        sa.Column("rows_done", sa.BigInteger(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("summary", JSON, nullable=True),
        *_job_columns("inspections"),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["training_id"],
            ["trainings.id"],
            name=op.f("fk_inspections_training_id_trainings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inspections")),
        sa.UniqueConstraint("training_id", name=op.f("uq_inspections_training_id")),
    )
    op.create_index(op.f("ix_inspections_status"), "inspections", ["status"])

    op.create_table(
        "inspection_latents",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=False),
        sa.Column("sae", sa.String(length=200), nullable=False),
        sa.Column("latent", sa.Integer(), nullable=False),
        sa.Column("density", sa.Float(), nullable=False),
        sa.Column("mean_activation", sa.Float(), nullable=False),
        sa.Column("max_activation", sa.Float(), nullable=False),
        sa.Column("top_tokens", JSON, nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inspection_id"],
            ["inspections.id"],
            name=op.f("fk_inspection_latents_inspection_id_inspections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inspection_latents")),
        sa.UniqueConstraint(
            "inspection_id",
            "sae",
            "latent",
            name=op.f("uq_inspection_latents_inspection_id_sae_latent"),
        ),
    )

    op.create_table(
        "latent_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("training_id", sa.Integer(), nullable=False),
        sa.Column("sae", sa.String(length=200), nullable=False),
        sa.Column("latent", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["training_id"],
            ["trainings.id"],
            name=op.f("fk_latent_labels_training_id_trainings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_latent_labels")),
        sa.UniqueConstraint(
            "training_id", "sae", "latent", name=op.f("uq_latent_labels_training_id_sae_latent")
        ),
    )


def downgrade() -> None:
    op.drop_table("latent_labels")
    op.drop_table("inspection_latents")
    op.drop_table("inspections")
