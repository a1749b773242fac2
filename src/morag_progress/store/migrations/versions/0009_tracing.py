"""Tracing: each job keeps its span's W3C trace context (its own traceparent, and the span id
of whoever created it), so workers' spans join the creator's trace. Jobs made before have none
and export no span.

The feed's job index gains the user id: a job's history between two ids (a page back, the
changes of one attempt) was read through the user index on SQLite, every row of the user.

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
    _job_index(["job_id", "user_id", "id"])


def downgrade() -> None:
    _job_index(["job_id", "id"])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("trace_parent_id")
        batch_op.drop_column("traceparent")


def _job_index(columns: list[str]) -> None:
    with op.batch_alter_table("progress_events", schema=None) as batch_op:
        batch_op.drop_index("ix_progress_events_job")
        batch_op.create_index("ix_progress_events_job", columns)
