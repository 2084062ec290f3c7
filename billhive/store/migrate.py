"""Schema migrations (Alembic), applied by ``billhive migrate`` and on ``billhive serve`` start."""

from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", _sa_url(url))
    return cfg


def _sa_url(url: str) -> str:
    # billhive's URLs name the driver for PostgreSQL (postgresql+psycopg://); accept plain postgresql://
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url.split("?")[0] if url.startswith("sqlite") else url


def upgrade(url: str) -> None:
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(url), "head")


def pending(url: str) -> bool:
    """True when the database is behind the newest migration."""
    engine = create_engine(_sa_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    return current != head


def revision(url: str, message: str) -> None:
    """Autogenerate a migration from the difference between the schema and the database."""
    command.revision(alembic_config(url), message=message, autogenerate=True)


def regenerate_initial() -> Path:
    """Rewrite migration 0001 from the schema (allowed only while billhive is unreleased).

    ``python -m billhive.store.migrate`` - used during development instead of stacking
    migrations; once a release ships, new migrations are added with ``revision()``.
    """
    versions = MIGRATIONS / "versions"
    for old in versions.glob("*.py"):
        if old.name != "__init__.py":
            old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/gen.db"
        command.revision(alembic_config(url), message="initial schema", autogenerate=True, rev_id="0001")
    (generated,) = [p for p in versions.glob("0001_*.py")]
    text = generated.read_text()
    text = re.sub(r"Create Date: .*\n", "", text)
    text = re.sub(r"[ \t]+\n", "\n", text)  # as ruff wants it: no trailing spaces, imports sorted
    text = re.sub(r"from alembic import op\nimport sqlalchemy as sa\n+",
                  "import sqlalchemy as sa\nfrom alembic import op\n\n", text)
    target = versions / "0001_initial.py"
    generated.unlink()
    target.write_text(text)
    return target


if __name__ == "__main__":
    print(regenerate_initial())


@functools.cache
def head() -> str:
    """The newest migration's revision id (what ``upgrade`` brings a database to). Read once: the
    migrations ship with the code (every snapshot names it; reading them costs ~10 ms)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""
