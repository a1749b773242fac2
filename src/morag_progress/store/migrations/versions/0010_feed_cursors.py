"""The feed's readers share one cursor type: the table of their positions, which held the
webhook outbox's and the span exporter's, is named for what it holds.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.rename_table("webhook_cursor", "feed_cursors")


def downgrade() -> None:
    op.rename_table("feed_cursors", "webhook_cursor")
