"""Job ids are unique per user: the jobs' key becomes (id, user_id).

A job without a user (made by a trusted in-process caller) gets the empty user id, in the jobs
table and in the change feed, so that the key has no NULL in it. Existing ids were unique
across users, so every existing job keeps its id.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _rekey(key: list[str], *, user_nullable: bool) -> None:
    """Give the jobs table the primary key ``key``."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint("jobs_pkey", "jobs", type_="primary")
        op.alter_column(
            "jobs",
            "user_id",
            existing_type=sa.String(128),
            nullable=user_nullable,
            server_default=None if user_nullable else "",
        )
        op.create_primary_key("jobs_pkey", "jobs", key)
        return
    # SQLite cannot change a table's key in place: batch mode copies the table into one built
    # from the reflected one with the new key.
    reflected = sa.Table("jobs", sa.MetaData(), autoload_with=bind)
    columns = []
    for column in reflected.columns:
        copy = column._copy()
        copy.primary_key = column.name in key
        if column.name == "user_id":
            copy.nullable = user_nullable
            copy.server_default = None if user_nullable else sa.DefaultClause("")
        columns.append(copy)
    target = sa.Table("jobs", sa.MetaData(), *columns)
    for index in reflected.indexes:
        sa.Index(index.name, *(target.c[c.name] for c in index.columns), unique=index.unique)
    with op.batch_alter_table("jobs", recreate="always", copy_from=target):
        pass


def upgrade() -> None:
    op.execute("UPDATE jobs SET user_id = '' WHERE user_id IS NULL")
    op.execute("UPDATE progress_events SET user_id = '' WHERE user_id IS NULL")
    _rekey(["id", "user_id"], user_nullable=False)


def downgrade() -> None:
    _rekey(["id"], user_nullable=True)
    op.execute("UPDATE jobs SET user_id = NULL WHERE user_id = ''")
    op.execute("UPDATE progress_events SET user_id = NULL WHERE user_id = ''")
