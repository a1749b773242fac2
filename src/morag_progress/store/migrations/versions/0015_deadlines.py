"""A job may have a deadline, and the server marks a running job at risk (likely to miss it,
or running longer than its kind usually takes) once, until that changes.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from morag_progress.store.schema import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("at_risk", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("at_risk")
        batch_op.drop_column("deadline")
