"""A webhook delivery names its job's user as well as its id: ids are unique per user, and an
admin's webhook hears every user's jobs, so a job's progress deliveries (throttled, and
superseded by the next while pending) are those of (user, id), not of every job of that id.

Existing deliveries take their webhook's user (an admin webhook's, whose user is unknown, "").

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_OLD = ["webhook_id", "job_id", "event_type", "id"]
_NEW = ["webhook_id", "job_user_id", "job_id", "event_type", "id"]


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("job_user_id", sa.String(128), nullable=False, server_default="")
        )
        batch_op.drop_index("ix_webhook_deliveries_progress")
        batch_op.create_index("ix_webhook_deliveries_progress", _NEW)
    op.execute(
        "UPDATE webhook_deliveries SET job_user_id = (SELECT user_id FROM webhooks"
        " WHERE webhooks.id = webhook_deliveries.webhook_id AND webhooks.user_id <> '*')"
        " WHERE EXISTS (SELECT 1 FROM webhooks WHERE webhooks.id = webhook_deliveries.webhook_id"
        " AND webhooks.user_id <> '*')"
    )


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_progress")
        batch_op.create_index("ix_webhook_deliveries_progress", _OLD)
        batch_op.drop_column("job_user_id")
