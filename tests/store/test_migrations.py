"""The migrations build exactly the schema the code declares, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from billhive.store import migrate
from billhive.store.schema import metadata


def test_migrated_database_matches_schema(app, database_url):
    engine = create_engine(migrate._sa_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == [], "schema changed without a migration: run python -m billhive.store.migrate"
    assert not migrate.pending(database_url)


def test_every_index_and_unique_key_leads_with_site_id():
    for table in metadata.sorted_tables:
        if table.name == "sites":
            continue
        assert "site_id" in table.c, table.name
        for ix in table.indexes:
            if ix.name != "ix_idempotency_keys_expires":
                assert list(ix.columns)[0].name == "site_id", ix.name
        for uc in table.constraints:
            cols = [c.name for c in getattr(uc, "columns", [])]
            if uc.__class__.__name__ == "UniqueConstraint" and table.name != "api_keys":
                assert cols[0] == "site_id", (table.name, cols)
