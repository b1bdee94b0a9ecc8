"""initial: activation datasets, trainings, metrics, checkpoints, templates

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Written to match ``saestudio/store/models.py`` exactly (a test compares them). Types are
spelled out here rather than imported from the models, so later model changes cannot
silently change what this revision creates.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TIME = sa.DateTime(timezone=True)


def _job_columns(table: str) -> list[sa.Column | sa.CheckConstraint]:
    """Status, pending control request and worker ownership (models.JobColumns)."""
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


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "activation_datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("manifest", JSON, nullable=True),
        sa.Column("contexts", sa.BigInteger(), nullable=False),
        sa.Column("target_contexts", sa.BigInteger(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        *_job_columns("activation_datasets"),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activation_datasets")),
        sa.UniqueConstraint("name", name=op.f("uq_activation_datasets_name")),
    )
    op.create_index(op.f("ix_activation_datasets_status"), "activation_datasets", ["status"])

    op.create_table(
        "trainings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("architecture", sa.String(length=32), nullable=False),
        sa.Column("d_sae", sa.Integer(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("latest_metrics", JSON, nullable=True),
        sa.Column("eta_seconds", sa.Float(), nullable=True),
        sa.Column("out_dir", sa.String(length=1000), nullable=False),
        sa.Column("exports", JSON, nullable=True),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        *_job_columns("trainings"),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["activation_datasets.id"],
            name=op.f("fk_trainings_dataset_id_activation_datasets"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["trainings.id"],
            name=op.f("fk_trainings_parent_id_trainings"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trainings")),
    )
    op.create_index(op.f("ix_trainings_name"), "trainings", ["name"])
    op.create_index(op.f("ix_trainings_status"), "trainings", ["status"])
    op.create_index(op.f("ix_trainings_dataset_id"), "trainings", ["dataset_id"])

    op.create_table(
        "training_metrics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("training_id", sa.Integer(), nullable=False),
        sa.Column("sae", sa.String(length=200), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.CheckConstraint(
            "kind IN ('train', 'eval', 'density', 'downstream')",
            name=op.f("ck_training_metrics_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["training_id"],
            ["trainings.id"],
            name=op.f("fk_training_metrics_training_id_trainings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_metrics")),
        sa.UniqueConstraint(
            "training_id",
            "sae",
            "step",
            "kind",
            name=op.f("uq_training_metrics_training_id_sae_step_kind"),
        ),
    )
    op.create_index(
        "ix_training_metrics_training_id_step", "training_metrics", ["training_id", "step"]
    )

    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("training_id", sa.Integer(), nullable=False),
        sa.Column("sae", sa.String(length=200), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("is_best", sa.Boolean(), nullable=False),
        sa.Column("eval_loss", sa.Float(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["training_id"],
            ["trainings.id"],
            name=op.f("fk_checkpoints_training_id_trainings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
        sa.UniqueConstraint(
            "training_id", "sae", "step", name=op.f("uq_checkpoints_training_id_sae_step")
        ),
    )
    op.create_index(op.f("ix_checkpoints_training_id"), "checkpoints", ["training_id"])

    op.create_table(
        "training_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("favourite", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_templates")),
        sa.UniqueConstraint("name", name=op.f("uq_training_templates_name")),
    )


def downgrade() -> None:
    # children first; dropping a table drops its indexes and constraints with it
    op.drop_table("training_templates")
    op.drop_table("checkpoints")
    op.drop_table("training_metrics")
    op.drop_table("trainings")
    op.drop_table("activation_datasets")
