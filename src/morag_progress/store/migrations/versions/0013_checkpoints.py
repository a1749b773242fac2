"""A job keeps its worker's latest checkpoint (a small JSON object, as text) and the percentage
it was saved at: a requeued job's next claim hands the checkpoint back, and the job resumes at
that percentage instead of 0%.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checkpoint", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("checkpoint_percentage", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("checkpoint_percentage")
        batch_op.drop_column("checkpoint")
