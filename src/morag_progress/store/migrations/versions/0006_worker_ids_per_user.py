"""Worker ids are a user's own names: worker mappings are keyed by (worker_id, user_id).

A claim maps the claiming key's user's worker to the job; another user's worker of the same
name no longer replaces that mapping. Existing mappings get the empty user id (in-process).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("worker_mappings", recreate="auto") as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.String(128), nullable=False, server_default=""))
    _rekey(["worker_id", "user_id"])


def downgrade() -> None:
    op.execute("DELETE FROM worker_mappings WHERE user_id <> ''")
    _rekey(["worker_id"])
    with op.batch_alter_table("worker_mappings", recreate="auto") as batch_op:
        batch_op.drop_column("user_id")


def _rekey(key: list[str]) -> None:
    """Give worker_mappings the primary key ``key``."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint("worker_mappings_pkey", "worker_mappings", type_="primary")
        op.create_primary_key("worker_mappings_pkey", "worker_mappings", key)
        return
    # SQLite: copy the table into one with the new key (as in 0005).
    reflected = sa.Table("worker_mappings", sa.MetaData(), autoload_with=bind)
    columns = []
    for column in reflected.columns:
        copy = column._copy()
        copy.primary_key = column.name in key
        columns.append(copy)
    target = sa.Table("worker_mappings", sa.MetaData(), *columns)
    with op.batch_alter_table("worker_mappings", recreate="always", copy_from=target):
        pass
