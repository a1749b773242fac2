"""A parent may expect its children (a distributed run's ranks, made as each process starts),
and the server flags a child that falls behind its siblings: the run cannot finish before all
its ranks have joined, and a straggling rank is shown on the run.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from morag_progress.store.schema import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expected_children", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("behind_since", UTCDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("straggler", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("stragglers", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.create_index(
            "ix_jobs_runs",
            ["status"],
            unique=False,
            postgresql_where=sa.text("expected_children IS NOT NULL"),
            sqlite_where=sa.text("expected_children IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_runs")
        for column in ("stragglers", "straggler", "behind_since", "expected_children"):
            batch_op.drop_column(column)
