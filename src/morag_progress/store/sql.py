"""SQLStore: jobs, the change feed, keys and mappings in one SQL database.

SQLite is the embedded default, PostgreSQL the store for several replicas, both through
SQLAlchemy Core. The store is put together from one class per concern (docs/architecture.md
section 2): ``engine.py`` (connections), ``writer.py`` (progress updates, in set-based batches
through one writer thread), ``statements.py`` (the rules, as the conditional statements both
run), ``lifecycle.py`` (creation, claims, cancel, requeue, heartbeats), ``rollup.py``
(parents), ``reads.py`` (jobs and the feed), ``credentials.py`` (keys, tokens, mappings),
``retention.py`` (pruning what ended long ago), ``runs.py`` (distributed runs' stragglers),
``risk.py`` (jobs at risk of missing their deadline).
"""

from __future__ import annotations

from morag_progress.store.credentials import Credentials
from morag_progress.store.engine import NO_USER
from morag_progress.store.reads import JobReader
from morag_progress.store.retention import Retention
from morag_progress.store.risk import RiskMarks
from morag_progress.store.runs import StragglerSweeps

__all__ = ["NO_USER", "SQLStore"]


class SQLStore(StragglerSweeps, RiskMarks, JobReader, Credentials, Retention):
    """The store on SQLite (``sqlite:///path``) or PostgreSQL (``postgresql+psycopg://``)."""
