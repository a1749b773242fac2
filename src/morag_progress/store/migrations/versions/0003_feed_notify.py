"""PostgreSQL: NOTIFY on every statement that writes feed rows, to wake every replica's tail.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

from morag_progress.store.schema import FEED_NOTIFY_FUNCTION, FEED_NOTIFY_TRIGGER

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FEED_NOTIFY_FUNCTION)
        op.execute(FEED_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS progress_events_notify ON progress_events")
        op.execute("DROP FUNCTION IF EXISTS morag_progress_feed_notify()")
