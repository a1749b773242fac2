"""Schema versions (alembic): a new database is created at the newest version; an older one is
upgraded by ``morag-progress db upgrade``, never behind the operator's back (several servers may
share the database, and an upgrade is a decision with a backup before it).

A database made before migrations existed (no ``alembic_version`` table, but ``jobs``) is at the
first revision, ``0001``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from morag_progress.errors import StoreError
from morag_progress.store import search
from morag_progress.store.schema import metadata

__all__ = [
    "BASELINE",
    "current_revision",
    "ensure_schema",
    "head_revision",
    "include_name",
    "upgrade",
]

BASELINE = "0001"
"""The revision of a database made before migrations existed."""
_SCRIPTS = Path(__file__).resolve().parent / "migrations"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's filter of what it compares with the models: everything but the search
    index's tables (``store/search.py`` keeps them with SQL of its own)."""
    return not (type_ == "table" and name is not None and search.is_own(name))


def head_revision() -> str:
    """The newest revision this version of morag-progress knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The database's revision: None when it has no tables yet."""
    names = set(inspect(connection).get_table_names())
    if "jobs" not in names:
        return None
    revision = MigrationContext.configure(connection).get_current_revision()
    return revision or BASELINE


def ensure_schema(engine: Engine) -> None:
    """Create the tables of a new database at the newest revision; refuse an older one.
    Errors name the database's dialect, as the store's do."""
    dialect = engine.dialect.name
    for attempt in range(2):
        try:
            with engine.begin() as conn:
                revision = current_revision(conn)
                if revision is None:
                    metadata.create_all(conn)
                    search.create(conn)
                    MigrationContext.configure(conn).stamp(
                        ScriptDirectory.from_config(_config()), "head"
                    )
                    return
        except SQLAlchemyError as e:
            if attempt:  # a second process created the same tables at the same moment
                raise StoreError(f"create tables failed on {dialect}: {e}") from e
            continue
        head = head_revision()
        if revision != head:
            raise StoreError(
                f"the database's schema is at revision {revision}, this version needs {head}: "
                "back it up, then run `morag-progress db upgrade`"
            )
        return


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the database to ``revision``; returns (before, after)."""
    try:
        with engine.begin() as conn:
            before = current_revision(conn)
            config = _config(conn)
            has_version_table = "alembic_version" in inspect(conn).get_table_names()
            if before is not None and not has_version_table:
                command.stamp(config, BASELINE)  # made before migrations: the first revision
            command.upgrade(config, revision)
            after = current_revision(conn)
    except SQLAlchemyError as e:
        raise StoreError(f"upgrade failed on {engine.dialect.name}: {e}") from e
    assert after is not None
    return before, after
