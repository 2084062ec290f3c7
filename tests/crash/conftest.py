from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def crash_db(request, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """The database a crash test's servers share, on each store (or as a test parametrizes it,
    indirectly): a SQLite file under tmp_path, or a PostgreSQL database of the test's own (no other
    test's sites: a failpoint counts this test's commits)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crash.db'}"
    return str(request.getfixturevalue("fresh_pg_url"))
