"""Read-only links to one job each (a signed token kept as its hash), for people without a key.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from morag_progress.store.schema import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "share_links",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_share_links_expiry", "share_links", ["expires_at"], unique=False)
    op.create_index("ix_share_links_user", "share_links", ["user_id", "expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_share_links_user", table_name="share_links")
    op.drop_index("ix_share_links_expiry", table_name="share_links")
    op.drop_table("share_links")
