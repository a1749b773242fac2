"""Tracing: each job keeps its span's W3C trace context (its own traceparent, and the span id
of whoever created it), so workers' spans join the creator's trace. Jobs made before have none
and export no span.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traceparent", sa.String(55), nullable=True))
        batch_op.add_column(sa.Column("trace_parent_id", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("trace_parent_id")
        batch_op.drop_column("traceparent")
