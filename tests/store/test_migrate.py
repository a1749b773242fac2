"""Migrations: they build the same schema as the models, on SQLite and PostgreSQL; an older
database is refused until `morag-progress db upgrade`, which keeps its data."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from morag_progress.cli import app
from morag_progress.errors import StoreError
from morag_progress.store import SQLStore
from morag_progress.store.migrate import head_revision, include_name
from morag_progress.store.schema import metadata

runner = CliRunner()


def test_migrations_build_the_models_schema(database_url: str) -> None:
    """Upgrading an empty database to head leaves nothing for autogenerate to add or change."""
    result = runner.invoke(app, ["db", "upgrade", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert f"to revision {head_revision()}" in result.output
    engine = create_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_name})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == []
    again = runner.invoke(app, ["db", "upgrade", "--database-url", database_url])
    assert "already at revision" in again.output
    store = SQLStore(database_url)  # at head: opens
    store.close()


def test_new_database_is_created_at_head(database_url: str) -> None:
    """Opening an empty database creates its tables at the newest revision."""
    store = SQLStore(database_url)
    assert store.revision() == head_revision()
    store.close()
    current = runner.invoke(app, ["db", "current", "--database-url", database_url])
    assert current.output.strip() == f"{head_revision()} (newest: {head_revision()})"


@pytest.mark.parametrize("version_table", [True, False])
def test_older_database_is_refused_then_upgraded_with_its_data(
    database_url: str, version_table: bool
) -> None:
    """A database at revision 0001 (or made before migrations, without a version table) is
    refused with the command to run; the upgrade keeps its jobs."""
    assert (
        runner.invoke(app, ["db", "upgrade", "0001", "--database-url", database_url]).exit_code == 0
    )
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, document_name, document_type, status, percentage, attempt,"
                " weight, metadata, cancel_requested, created_at, updated_at, last_seq)"
                " VALUES ('old', 'a.pdf', 'pdf', 'PROCESSING', 40, 1, 1.0, '{}', false,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00', 0)"
            )
        )
        if not version_table:
            conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    with pytest.raises(StoreError, match="morag-progress db upgrade"):
        SQLStore(database_url)
    result = runner.invoke(app, ["db", "upgrade", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert f"from 0001 to revision {head_revision()}" in result.output
    store = SQLStore(database_url)
    job = store.get_job("old")
    assert job is not None
    assert [j.id for j in store.list_jobs(search="a.pd")] == ["old"]  # the index was filled
    assert (job.percentage, job.children, job.children_done, job.created_by) == (40, 0, 0, None)
    store.close()
