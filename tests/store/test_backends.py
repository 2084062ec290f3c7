"""The two stores behind ``Database``: which one a URL opens, the PostgreSQL connection string,
the one unique-violation detector, and ``Tx.pipelined``."""

from __future__ import annotations

import uuid

import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import text
from sqlalchemy.engine import make_url

from billhive.store import postgres
from billhive.store.db import Database, PostgresDatabase, SqliteDatabase, check_writable, is_unique_violation

AWKWARD_PASSWORD = "a b'c\\d=e"  # a space, a quote, a backslash, an equals sign


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    request.applymarker(pytest.mark.postgres)
    return request.getfixturevalue("pg_url")


def test_the_url_chooses_the_store(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}", synchronous="OFF")
    try:
        assert type(db) is SqliteDatabase and isinstance(db, Database)
        assert (db.dialect, db.synchronous) == ("sqlite", "OFF")
    finally:
        db.close()
    pg = Database("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")  # connects only when used
    try:
        assert type(pg) is PostgresDatabase and isinstance(pg, Database) and pg.dialect == "postgresql"
    finally:
        pg.close()


def test_conninfo_quotes_every_value():
    u = make_url("postgresql+psycopg://u@db.example:6543/billing?application_name=bill hive&synchronous=off")
    u = u.set(password=AWKWARD_PASSWORD)
    assert conninfo_to_dict(postgres.conninfo(u)) == {
        "host": "db.example", "port": "6543", "user": "u", "password": AWKWARD_PASSWORD, "dbname": "billing",
        "application_name": "bill hive"}  # synchronous is billhive's own parameter, not libpq's


@pytest.mark.postgres
def test_a_password_with_a_space_and_a_quote_connects(pg_url):
    u = make_url(pg_url)
    if u.password:
        pytest.skip("the test server asks for its own password")
    # the test server trusts local connections, so any password is accepted - once libpq can
    # parse the connection string (unquoted, "password=a b'c" was a syntax error)
    url = u.set(password=AWKWARD_PASSWORD).render_as_string(hide_password=False)
    check_writable(url)
    db = Database(url)
    try:
        assert db.read_sync(lambda tx: tx.scalar(text("SELECT 1"))) == 1
    finally:
        db.close()


def test_unique_violations_and_only_they_are_detected(store_url):
    name = f"uv_{uuid.uuid4().hex[:8]}"
    db = Database(store_url)

    def attempt(sql: str) -> BaseException:
        def unit(tx):
            tx.cur.execute(sql)

        with pytest.raises(Exception) as info:
            db.write_sync(unit)
        return info.value

    try:
        db.write_sync(lambda tx: tx.cur.execute(f"CREATE TABLE {name} (k integer PRIMARY KEY, u text UNIQUE, "
                                                f"n text NOT NULL)"))
        db.write_sync(lambda tx: tx.cur.execute(f"INSERT INTO {name} VALUES (1, 'a', 'x')"))
        assert is_unique_violation(attempt(f"INSERT INTO {name} VALUES (1, 'b', 'x')"))  # primary key
        assert is_unique_violation(attempt(f"INSERT INTO {name} VALUES (2, 'a', 'x')"))  # unique column
        assert not is_unique_violation(attempt(f"INSERT INTO {name} VALUES (3, 'c', NULL)"))  # not null
        assert not is_unique_violation(attempt(f"INSERT INTO no_such_table_{name} VALUES (1)"))
        assert not is_unique_violation(ValueError("UNIQUE constraint failed"))
    finally:
        db.write_sync(lambda tx: tx.cur.execute(f"DROP TABLE IF EXISTS {name}"))
        db.close()


def test_tx_knows_when_it_is_pipelined(store_url):
    db = Database(store_url)
    postgres_ = db.dialect == "postgresql"

    def unit(tx):
        seen = [tx.pipelined]
        with tx.pipeline():
            seen.append(tx.pipelined)
            with tx.pipeline():  # nested: still the one pipeline
                seen.append(tx.pipelined)
            seen.append(tx.pipelined)
        seen.append(tx.pipelined)
        with pytest.raises(LookupError), tx.pipeline():
            raise LookupError("inside the pipeline")
        seen.append(tx.pipelined)  # an error inside ends it too
        return seen

    try:
        assert db.write_sync(unit) == [False, postgres_, postgres_, postgres_, False, False]
    finally:
        db.close()
