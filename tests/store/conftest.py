"""The store's tests build their statements afresh: a statement an earlier test built (and the
builders keep) would hide from this test what its builder does now."""

from __future__ import annotations

import pytest

from morag_progress.store.statements import BUILT


@pytest.fixture(autouse=True)
def _statements_built_afresh() -> None:
    for cache in BUILT:
        cache.cache_clear()
