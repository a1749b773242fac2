"""Parent jobs' running sums, and the webhook tables (endpoints, outbox, feed cursor).

Existing jobs get zero sums: they have no children yet.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from morag_progress.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("webhook_id", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_event"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_deliveries_due", ["state", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_deliveries_progress",
            ["webhook_id", "job_id", "event_type", "id"],
            unique=False,
        )
        batch_op.create_index("ix_webhook_deliveries_webhook", ["webhook_id", "id"], unique=False)

    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("progress_interval_s", sa.Float(), nullable=False),
        sa.Column("after_event_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.create_index("ix_webhooks_user", ["user_id"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("children", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("children_done", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("children_failed", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("children_weight", sa.Float(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("children_progress", sa.Float(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("rolled_up_pct", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("rolled_up_done", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for column in (
            "children",
            "children_done",
            "children_failed",
            "children_weight",
            "children_progress",
            "rolled_up_pct",
            "rolled_up_done",
        ):
            batch_op.drop_column(column)
    for table in ("webhooks", "webhook_deliveries", "webhook_cursor"):
        op.drop_table(table)
