"""Reports a reporter could not deliver before its close deadline, kept on disk and sent later.

A reporter over HTTP whose close gives up (the server down or slow) writes what it still had to
send to one file in the spool directory: the job's making (``create_first``), the queued notes
(the first update, stages' starts), the latest update and the final status, in order. Each
report carries its own time and sequence number, so sending it later cannot overwrite anything
newer the job has; making a job twice makes it once. A file names the
server and the key that were to take its reports: the key by a fingerprint (a prefix of its
SHA-256), never the key itself. ``morag-progress flush`` sends the files of the server and key
it is given; a reporter sends those of its own server and key once that server has answered it,
one request at a time between its own reports.

Bounded: at most ``MAX_FILES`` files (a new one pushes out the oldest) of at most ``MAX_CALLS``
requests each. Writing never raises into the worker: a directory that cannot be written is a
warning, and the reports are lost as they were before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from morag_progress.client._core import ReporterCore, Verdict, verdict_of_status
from morag_progress.errors import ConfigurationError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MAX_CALLS",
    "MAX_FILES",
    "Spooled",
    "directory",
    "fingerprint",
    "keep",
    "keep_undelivered",
    "others",
    "pending",
    "send_next",
]

logger = logging.getLogger("morag_progress.client")

MAX_FILES = 1000
"""The most files the spool holds; a new one pushes out the oldest."""
MAX_CALLS = 32
"""The most requests one file keeps (the queued notes' oldest give way first)."""
_SUFFIX = ".json"


def directory() -> Path:
    """The spool directory: ``MORAG_PROGRESS_SPOOL_DIR``, else ``spool`` in the user's data
    directory (beside the default SQLite file)."""
    from morag_progress.settings import load_settings  # pydantic: only when a spool is used

    return load_settings().resolved_spool_dir


def fingerprint(headers: dict[str, str]) -> str:
    """Which key a request carries, without the key: a prefix of its SHA-256 ("" for none)."""
    import hashlib  # here: a worker's import of the client stays light

    authorization = headers.get("Authorization", "")
    if not authorization:
        return ""
    return hashlib.sha256(authorization.encode()).hexdigest()[:16]


@dataclass
class Spooled:
    """One file of the spool: the reports of one reporter's close, for one server and key."""

    path: Path
    url: str
    key: str
    job_id: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    """Each request, in order: ``{"method", "path", "body"}``."""
    made_at: float = 0.0

    def save(self) -> None:
        """Write the file whole (a reader never sees half of it), or remove it when no
        request is left."""
        if not self.calls:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        import json
        import tempfile

        data = {
            "url": self.url,
            "key": self.key,
            "job_id": self.job_id,
            "made_at": self.made_at,
            "calls": self.calls,
        }
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def keep(
    url: str, key: str, job_id: str, calls: list[dict[str, Any]], where: Path | None = None
) -> Spooled | None:
    """Write ``calls`` (requests to ``url`` with the key fingerprinted ``key``) to a new file
    of the spool; None, with a warning, when it cannot be written. Never raises."""
    if not calls:
        return None
    import uuid

    try:
        folder = directory() if where is None else where
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        made_at = time.time()
        name = f"{made_at:017.6f}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
        spooled = Spooled(folder / name, url, key, job_id, calls[-MAX_CALLS:], made_at)
        spooled.save()
        _bound(folder)
        return spooled
    except (OSError, ValueError, TypeError, ConfigurationError) as e:
        # The worker comes first: a spool that cannot be written loses the reports.
        logger.warning("job %s: could not keep its undelivered reports: %s", job_id, e)
        return None


def keep_undelivered(reporter: ReporterCore, url: str, key: str) -> Spooled | None:
    """Keep what ``reporter`` has not delivered (``ReporterCore.undelivered``) for ``url``
    and the key fingerprinted ``key``, saying so in the log. Never raises."""
    calls = [{"method": c.method, "path": c.path, "body": c.body} for c in reporter.undelivered()]
    spooled = keep(url, key, reporter.job_id, calls)
    if spooled is not None:
        logger.warning(
            "job %s: %d reports not delivered by the close deadline, kept in %s "
            "(morag-progress flush sends them)",
            reporter.job_id,
            len(spooled.calls),
            spooled.path,
        )
    else:
        logger.warning("job %s: closed with reports not yet delivered", reporter.job_id)
    return spooled


def pending(url: str, key: str, where: Path | None = None) -> list[Spooled]:
    """The spool's files for ``url`` and the key fingerprinted ``key``, oldest first. A file
    that cannot be read is left where it is, with a warning."""
    return [s for s in _files(where) if s.url == url and s.key == key]


def others(url: str, key: str, where: Path | None = None) -> int:
    """How many of the spool's files are for another server or key."""
    return sum(1 for s in _files(where) if (s.url, s.key) != (url, key))


def _files(where: Path | None) -> Iterator[Spooled]:
    import json

    try:
        folder = directory() if where is None else where
        paths = sorted(folder.glob(f"*{_SUFFIX}"))
    except (OSError, ConfigurationError) as e:
        logger.warning("cannot read the spool: %s", e)
        return
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            calls = data["calls"]
            if not isinstance(calls, list) or not all(_valid(call) for call in calls):
                raise ValueError("its requests are not as a reporter writes them")
            yield Spooled(
                path,
                str(data["url"]),
                str(data["key"]),
                str(data["job_id"]),
                calls,
                float(data.get("made_at", 0.0)),
            )
        except FileNotFoundError:
            continue  # sent and removed by another process meanwhile
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("spool file %s skipped: %s", path, e)


def send_next(client: httpx.Client, spooled: Spooled) -> tuple[Verdict, str]:
    """Send the first request of ``spooled`` with ``client`` and what the server said: with
    RETRY (not reachable, busy) the file is left as it was; otherwise the request is done with
    (the job took it, or never will: with OVER, nothing more of the file is sent) and the file
    is rewritten, or removed once empty."""
    import httpx

    call = spooled.calls[0]
    try:
        response = client.request(call["method"], call["path"], json=call.get("body"))
    except httpx.HTTPError as e:
        return Verdict.RETRY, f"{type(e).__name__}: {e}"
    verdict = verdict_of_status(response.status_code)
    detail = f"HTTP {response.status_code}"
    if verdict is not Verdict.TAKEN:
        with contextlib.suppress(ValueError):
            detail += f": {response.json().get('detail')}"
    if verdict is not Verdict.RETRY:
        if verdict is Verdict.OVER:
            spooled.calls.clear()  # the job takes nothing more (gone, ended, not this key's)
        else:
            del spooled.calls[0]
        spooled.save()
    return verdict, detail


def _valid(call: object) -> bool:
    """Whether ``call`` is a request a reporter keeps: a report on a job, or the job's making
    (a file edited by hand sends nothing else with the key)."""
    if not isinstance(call, dict) or not isinstance(call.get("path"), str):
        return False
    path, method, body = call["path"], call.get("method"), call.get("body")
    if path == "/api/v1/jobs":
        return method == "POST" and isinstance(body, dict)
    return (
        method in ("PUT", "POST")
        and path.startswith("/api/v1/remote-jobs/")
        and (body is None or isinstance(body, dict))
    )


def _bound(folder: Path) -> None:
    """Remove the oldest files past ``MAX_FILES``."""
    files = sorted(folder.glob(f"*{_SUFFIX}"))
    for old in files[: max(0, len(files) - MAX_FILES)]:
        logger.warning("spool full: %s dropped (its reports are lost)", old.name)
        with contextlib.suppress(OSError):
            old.unlink()
