"""Live chat messages: a webhook's platform token and channel, and the one message per job it
keeps up to date (Slack's ``ts``, Telegram's ``message_id``, ntfy's sequence id).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from morag_progress.store.schema import UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("token", sa.Text(), nullable=True))
        batch.add_column(sa.Column("channel", sa.String(256), nullable=True))
    op.create_table(
        "live_messages",
        sa.Column("webhook_id", sa.String(32), nullable=False),
        sa.Column("job_user_id", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("ref", sa.String(256), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("busy_until", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("webhook_id", "job_user_id", "job_id"),
    )
    op.create_index("ix_live_messages_updated", "live_messages", ["updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_live_messages_updated", table_name="live_messages")
    op.drop_table("live_messages")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("channel")
        batch.drop_column("token")
