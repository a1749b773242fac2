"""Print the server's OpenAPI document (the HTTP contract the TypeScript types come from)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from morag_progress.api import create_app
from morag_progress.settings import Settings
from morag_progress.store import SQLStore

with tempfile.TemporaryDirectory() as scratch:
    store = SQLStore(f"sqlite:///{Path(scratch) / 'openapi.db'}")
    try:
        spec = create_app(Settings(), store=store).openapi()
    finally:
        store.close()
json.dump(spec, sys.stdout, indent=1, sort_keys=True)
sys.stdout.write("\n")
