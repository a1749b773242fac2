"""The search index: which jobs hold a text in their id, name or message, without reading
every job of the user.

A side table, ``job_search``, holds each job's id and name, and its message once the job has
ended (SQLite: an FTS5 table with the trigram tokenizer, keyed by the job's rowid; PostgreSQL:
a table with a pg_trgm GIN index). Triggers keep it: a job's insert and delete, and a change of
its status. A progress report that leaves the status as it is never touches it, so the hot
path pays nothing; a running job's message, which changes with every report, is read from the
job itself instead (an index range: open jobs are few and capped per user).

So a search is two small reads that name its candidates (the index's matches and the open
jobs whose message holds the text), then the page or the counts over those candidates only.
Where the index cannot narrow the search (a text shorter than three characters, which has no
trigram, or more than ``MAX_CANDIDATES`` matches, which a page finds soon anyway by walking
the newest jobs), the filter is the plain substring scan.

The triggers belong to the ``jobs`` table: a migration that rebuilds ``jobs`` on SQLite (alembic's
batch mode copies and drops it, and its triggers with it) must call ``create`` again after it.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, and_, or_, select, text, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import false

from morag_progress.models import TERMINAL_STATUSES, JobStatus
from morag_progress.store.schema import jobs

__all__ = ["MAX_CANDIDATES", "MIN_INDEXED", "TABLE", "condition", "create", "drop", "is_own"]

TABLE = "job_search"
"""The index's table (SQLite adds its FTS5 shadow tables, ``job_search_*``)."""
MIN_INDEXED = 3
"""The shortest text the index finds (one trigram)."""
MAX_CANDIDATES = 1000
"""The most matches a search takes from the index; past it, the substring scan."""

_ENDED = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES))
_OPEN = [s.value for s in JobStatus if s not in TERMINAL_STATUSES]
# The message is indexed once the job has ended; before, it changes with every report.
_SUMMARY = "CASE WHEN {row}.status IN (" + _ENDED + ") THEN {row}.summary END"

_SQLITE = [
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5("
    "user_id UNINDEXED, id, name, summary, tokenize = 'trigram')",
    f"CREATE TRIGGER IF NOT EXISTS {TABLE}_insert AFTER INSERT ON jobs BEGIN"
    f" INSERT INTO {TABLE} (rowid, user_id, id, name, summary) VALUES"
    f" (new.rowid, new.user_id, new.id, new.document_name, {_SUMMARY.format(row='new')});"
    " END",
    f"CREATE TRIGGER IF NOT EXISTS {TABLE}_status AFTER UPDATE OF status ON jobs"
    " WHEN old.status IS NOT new.status BEGIN"
    f" UPDATE {TABLE} SET summary = {_SUMMARY.format(row='new')} WHERE rowid = new.rowid;"
    " END",
    f"CREATE TRIGGER IF NOT EXISTS {TABLE}_delete AFTER DELETE ON jobs BEGIN"
    f" DELETE FROM {TABLE} WHERE rowid = old.rowid;"
    " END",
    f"DELETE FROM {TABLE}",
    f"INSERT INTO {TABLE} (rowid, user_id, id, name, summary)"
    f" SELECT rowid, user_id, id, document_name, {_SUMMARY.format(row='jobs')} FROM jobs",
]

_POSTGRESQL = [
    f"CREATE TABLE IF NOT EXISTS {TABLE} (user_id VARCHAR(128) NOT NULL,"
    " id VARCHAR(128) NOT NULL, name VARCHAR(255) NOT NULL, summary TEXT,"
    " PRIMARY KEY (user_id, id))",
    f"CREATE OR REPLACE FUNCTION {TABLE}_keep() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN"
    " IF TG_OP = 'DELETE' THEN"
    f"  DELETE FROM {TABLE} WHERE user_id = OLD.user_id AND id = OLD.id; RETURN OLD;"
    " END IF;"
    f" INSERT INTO {TABLE} (user_id, id, name, summary)"
    f"  VALUES (NEW.user_id, NEW.id, NEW.document_name, {_SUMMARY.format(row='NEW')})"
    "  ON CONFLICT (user_id, id) DO UPDATE SET name = EXCLUDED.name, summary = EXCLUDED.summary;"
    " RETURN NEW;"
    " END $$",
    f"DROP TRIGGER IF EXISTS {TABLE}_rows ON jobs",
    f"CREATE TRIGGER {TABLE}_rows AFTER INSERT OR DELETE ON jobs"
    f" FOR EACH ROW EXECUTE FUNCTION {TABLE}_keep()",
    f"DROP TRIGGER IF EXISTS {TABLE}_status ON jobs",
    f"CREATE TRIGGER {TABLE}_status AFTER UPDATE OF status ON jobs FOR EACH ROW"
    f" WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION {TABLE}_keep()",
    f"DELETE FROM {TABLE}",
    f"INSERT INTO {TABLE} (user_id, id, name, summary)"
    f" SELECT user_id, id, document_name, {_SUMMARY.format(row='jobs')} FROM jobs",
]
# pg_trgm is a trusted extension (PostgreSQL 13+): a database's owner may create it. Without
# it the table is still kept and searched, by a scan of its own.
_TRIGRAMS = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS ix_{TABLE}_trigrams ON {TABLE} USING gin"
    " (id gin_trgm_ops, name gin_trgm_ops, summary gin_trgm_ops)",
]


def create(conn: Connection) -> None:
    """Create (or rebuild) the index and its triggers, and fill it from the jobs table."""
    if conn.dialect.name == "sqlite":
        for statement in _SQLITE:
            conn.exec_driver_sql(statement)
        return
    for statement in _POSTGRESQL:
        conn.exec_driver_sql(statement)
    try:
        with conn.begin_nested():
            for statement in _TRIGRAMS:
                conn.exec_driver_sql(statement)
    except DBAPIError:
        pass  # no pg_trgm here (not installed, or no right to create it)


def drop(conn: Connection) -> None:
    """Drop the index and its triggers."""
    if conn.dialect.name == "sqlite":
        for name in ("insert", "status", "delete"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TABLE}_{name}")
    else:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TABLE}_rows ON jobs")
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TABLE}_status ON jobs")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {TABLE}_keep()")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")


def is_own(table: str) -> bool:
    """Whether a table is the index's (not in the models' metadata, so migrations' comparisons
    leave it out)."""
    return table == TABLE or table.startswith(TABLE + "_")


def condition(conn: Connection, search: str, user_id: str | None) -> ColumnElement[bool]:
    """The jobs (of ``user_id``, or of every user) whose id, name or message holds ``search``
    in any case, as a condition on ``jobs``: their keys when the index narrows them down,
    else the substring scan."""
    j = jobs.c
    pattern = "%" + _escape_like(search) + "%"
    scan = or_(
        j.document_name.ilike(pattern, escape="\\"),
        j.id.ilike(pattern, escape="\\"),
        j.summary.ilike(pattern, escape="\\"),
    )
    if len(search) < MIN_INDEXED:
        return scan
    found = _indexed(conn, search, pattern, user_id)
    if found is None:
        return scan
    # Open jobs' messages, from the jobs themselves: a range of the queue index (status,
    # user), whose rows are read for their message; open jobs are few beside ended ones.
    live = select(j.user_id, j.id).where(j.status.in_(_OPEN), j.summary.ilike(pattern, escape="\\"))
    if user_id is not None:
        live = live.where(j.user_id == user_id)
    found |= {(u, i) for u, i in conn.execute(live.limit(MAX_CANDIDATES + 1))}
    if len(found) > MAX_CANDIDATES:
        return scan
    if not found:
        return false()
    # The ids alone as well: a planner seeks the primary key (id, user_id) for each, where
    # with the pairs alone SQLite walks every job of the user.
    return and_(j.id.in_(sorted({i for _, i in found})), tuple_(j.user_id, j.id).in_(sorted(found)))


def _indexed(
    conn: Connection, search: str, pattern: str, user_id: str | None
) -> set[tuple[str, str]] | None:
    """The keys of the index's matches; None past ``MAX_CANDIDATES``."""
    mine = "" if user_id is None else " AND user_id = :user_id"
    if conn.dialect.name == "sqlite":
        phrase = '"' + search.replace('"', '""') + '"'
        stmt = text(f"SELECT user_id, id FROM {TABLE} WHERE {TABLE} MATCH :q{mine} LIMIT :n")
        params: dict[str, object] = {"q": phrase}
    else:
        held = " OR ".join(f"{c} ILIKE :q ESCAPE '\\'" for c in ("id", "name", "summary"))
        stmt = text(f"SELECT user_id, id FROM {TABLE} WHERE ({held}){mine} LIMIT :n")
        params = {"q": pattern}
    params["n"] = MAX_CANDIDATES + 1
    if user_id is not None:
        params["user_id"] = user_id
    rows = {(u, i) for u, i in conn.execute(stmt, params)}
    return None if len(rows) > MAX_CANDIDATES else rows


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
