"""A search index beside the jobs table: each job's id and name, and its message once it has
ended, kept by triggers (SQLite FTS5 with the trigram tokenizer; PostgreSQL pg_trgm), so a
search no longer reads every job of the user. Filled from the existing jobs.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

from morag_progress.store import search

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    search.create(op.get_bind())


def downgrade() -> None:
    search.drop(op.get_bind())
