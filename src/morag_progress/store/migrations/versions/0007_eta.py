"""Prediction: each job keeps its live pace; each user's kind of job what finished jobs took.
Workers: an index of jobs by when they ended. Webhooks: a body format (json, slack,
discord) and a cap on deliveries an hour. Retention: jobs whose feed is being pruned, and an
index of deliveries by age.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from morag_progress.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pace", sa.JSON(), nullable=True))
        batch_op.create_index("ix_jobs_ended", ["end_date", "worker_id"])
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("format", sa.String(16), nullable=False, server_default="json")
        )
        batch_op.add_column(sa.Column("max_per_hour", sa.Integer(), nullable=True))
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_deliveries_created", ["created_at"])
    op.create_table(
        "pruning",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "eta_history",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("document_type", sa.String(64), primary_key=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pruning")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_created")
    op.drop_table("eta_history")
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_column("max_per_hour")
        batch_op.drop_column("format")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_ended")
        batch_op.drop_column("pace")
