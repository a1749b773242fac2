"""Schemathesis over the OpenAPI schema: generated requests to every route (event streams
aside: they never end) find no 5xx and no response that breaks the schema."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from morag_progress.api import create_app
from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore

_DIRECTORY = Path(tempfile.mkdtemp(prefix="morag-schemathesis-"))
_STORE = SQLStore(f"sqlite:///{_DIRECTORY / 'fuzz.db'}")
_, _KEY = _STORE.create_key(user_id="alice", role=Role.ADMIN, name="fuzz", now=utcnow())
_APP = create_app(Settings(rate_limit_per_second=0, key_cache_seconds=60), store=_STORE)

schema = schemathesis.openapi.from_asgi("/openapi.json", _APP).exclude(path_regex="events$")


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case: Any) -> None:
    """No 5xx, statuses and bodies as documented, for generated inputs. (Schema-valid data
    may still break a rule the schema cannot state, such as a timestamp far in the future, so
    a 422 for schema-valid data is not a failure; every other check runs.)"""
    case.call_and_validate(
        headers={"Authorization": f"Bearer {_KEY}"}, excluded_checks=[positive_data_acceptance]
    )
