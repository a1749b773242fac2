"""The audit trail: each feed row records who made the change and what kind it was; each job
who created it. Rows written before have none (shown as unknown).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns without a default: a metadata-only change on both databases, so a
    # large feed is not rewritten.
    with op.batch_alter_table("progress_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("action", sa.String(16), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("created_by")
    with op.batch_alter_table("progress_events", schema=None) as batch_op:
        batch_op.drop_column("action")
        batch_op.drop_column("actor")
