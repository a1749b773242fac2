"""The public surface is small and pinned."""

from __future__ import annotations

import morag_progress


def test_all_is_the_public_surface() -> None:
    """__all__ lists exactly the public names of the package, sorted."""
    public = {name for name in dir(morag_progress) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(morag_progress, name)).__name__ == "module"}
    assert set(morag_progress.__all__) - {"__version__"} == public - modules
    assert morag_progress.__all__ == sorted(morag_progress.__all__)


def test_version() -> None:
    """The installed distribution's version is exposed."""
    assert morag_progress.__version__.count(".") >= 2
