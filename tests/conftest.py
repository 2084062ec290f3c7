"""Test fixtures: every store/service/HTTP test runs on SQLite and on PostgreSQL.

PostgreSQL: BILLHIVE_TEST_PG (default postgresql+psycopg://postgres@127.0.0.1:5432/test);
the databases the tests use are created during the run and dropped afterwards. If the server is unreachable
the PostgreSQL variants are skipped - unless BILLHIVE_REQUIRE_PG=1 (CI), then they fail.

Isolation between tests comes from sites: each test makes its own site(s) (random names),
so tests never see each other's rows, on either backend.

The suite runs in parallel (pytest-xdist, ``-n auto`` in pyproject's addopts; ``-n0`` for one
process): session fixtures exist once per worker process, and each worker has its own databases (SQLite
files under its own tmp_path, PostgreSQL databases of its own) and its own live servers on ports it bound
itself (``server``: one per module and backend, on a database shared with other modules until that holds
SITES_PER_DATABASE sites, tests/support/stores.py). See docs/DEVELOPING.md, "Running tests", for the
rules a test follows to stay parallel-safe.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import settings

from billhive.runtime import App
from billhive.store import migrate
from tests.support import alone
from tests.support.pg import OwnDatabases
from tests.support.server import LiveServer, TestSite, new_site
from tests.support.stores import PG_FIRST_SITE_PK, SessionStores, sites_from
from tests.support.stripe_fake import StripeFake


def _bytecode_kept() -> None:
    """The run's processes write and reuse bytecode even where ``PYTHONDONTWRITEBYTECODE`` is set (as
    in some sandboxes and CI images): without it every process of the run - each xdist worker, each
    child process a test starts - compiles billhive and pytest rewrites the asserts of all ~150 test
    modules from source again: collecting the suite took ~13 s of CPU per worker instead of ~4 s on a
    2-core machine. The bytecode goes where Python puts it anyway (``__pycache__``, ignored by git).
    The xdist workers and child processes start after this, with the variable gone from their
    environment; this process reads the bytecode they wrote."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        sys.dont_write_bytecode = False


_bytecode_kept()


def _temporary_files_in_memory() -> None:
    """Temporary files of the run (pytest's ``tmp_path``s: the SQLite databases, the crash and disk-full
    tests' files; the benchmark harness's work directories) on tmpfs, /dev/shm, when it is there, has room
    and ``TMPDIR`` names no other place: a SQLite commit (synchronous=FULL, as in production) waits
    ~0.5 ms for the disk's fsync on this machine and ~0.03 ms on tmpfs. Set before pytest picks its base
    temporary directory (the xdist workers and every child process inherit ``TMPDIR``). What the tests
    prove does not depend on the file system: a SIGKILLed process leaves its writes in the page cache
    either way, and the disk-full tests make their full file system themselves."""
    shm = "/dev/shm"
    if "TMPDIR" in os.environ or not os.path.isdir(shm) or not os.access(shm, os.W_OK | os.X_OK):
        return
    st = os.statvfs(shm)
    if st.f_bavail * st.f_frsize < SHM_NEEDS:
        return
    os.environ["TMPDIR"] = shm
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


SHM_NEEDS = 2 << 30  # bytes free on /dev/shm to use it (a container's default /dev/shm is 64 MB)
_temporary_files_in_memory()

PG_URL = os.environ.get("BILLHIVE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("BILLHIVE_REQUIRE_PG") == "1"

_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    # {site}.localhost resolves to loopback inside the test process (the SDK builds such URLs)
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo

# Hypothesis fails an example that takes over 200 ms by default; on a machine whose cores the other
# test workers (and other processes) keep busy a pure rule can be descheduled that long. A rule that
# takes a whole second for one example is still reported.
settings.register_profile("billhive", deadline=timedelta(seconds=1))
settings.load_profile("billhive")

MAX_AUTO_WORKERS = 4  # each worker holds its own PostgreSQL connections (pools of 16, servers it starts)
WORKERS_PER_CPU = 2


def pytest_xdist_auto_num_workers(config):  # type: ignore[no-untyped-def]
    """``-n auto``: two workers per CPU the process may use, at most MAX_AUTO_WORKERS. A worker spends
    about half of its wall time waiting, not on the CPU: on the servers and child processes its tests
    start, on PostgreSQL, on a test's deliberate waits (a webhook receiver that is down, a deadline).
    On the 2-core machine, 2,536 tests: one worker per CPU, 3:48-4:11; two, 3:10-3:51 (and 3:28 with
    three), in the same hour. The ``alone`` tests still run with no other test beside them."""
    return max(1, min(WORKERS_PER_CPU * len(os.sched_getaffinity(0)), MAX_AUTO_WORKERS))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):  # type: ignore[no-untyped-def]
    """Tests not marked ``alone`` share the CPU with each other, not with an ``alone`` one."""
    directory = alone.lock_dir(item.config)
    if directory is None or item.get_closest_marker("alone"):
        return (yield)
    with alone.held(directory, exclusive=False):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):  # type: ignore[no-untyped-def]
    directory = alone.lock_dir(item.config)
    if directory is None or not item.get_closest_marker("alone"):
        return (yield)
    with alone.held(directory, exclusive=True):
        return (yield)


def _pg_admin():
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(PG_URL)
    return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database,
                           password=u.password, autocommit=True, connect_timeout=5), u


@pytest.fixture(scope="session")
def pg_server():
    """PostgreSQL is reachable (else the PostgreSQL variants skip, or fail under BILLHIVE_REQUIRE_PG=1)."""
    try:
        admin, _ = _pg_admin()
    except Exception as exc:  # pragma: no cover - depends on the machine
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (BILLHIVE_REQUIRE_PG=1) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    admin.close()


@pytest.fixture(scope="session")
def own_pg_databases(pg_server, request):
    """This worker's maker of PostgreSQL databases of a test's own (tests/support/pg.py: copies of a
    template migrated once, the next one made and the last one dropped in the background, never while
    an ``alone`` test runs)."""
    directory = alone.lock_dir(request.config)
    databases = OwnDatabases(PG_URL, guard=lambda: alone.beside(directory)) if directory \
        else OwnDatabases(PG_URL)
    yield databases
    databases.close()


@pytest.fixture(scope="session")
def pg_url(own_pg_databases):
    """A migrated PostgreSQL database of this worker's (for tests of the store itself; the session
    server's database is ``database_url``)."""
    url = own_pg_databases.take()
    sites_from(url, PG_FIRST_SITE_PK)
    yield url
    own_pg_databases.give_back(url)


@pytest.fixture
def fresh_pg_url(own_pg_databases):
    """A PostgreSQL database of this test's own, migrated (for process-level tests whose server must
    see no other test's sites: its scheduler and recovery run over every site of the database)."""
    url = own_pg_databases.take()
    yield url
    own_pg_databases.give_back(url)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def _sqlite_stores(tmp_path_factory):
    def new_database() -> str:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'billhive.db'}"
        migrate.upgrade(url)
        return url

    def drop_database(url: str) -> None:  # its folder: the file, -wal, -shm, the background lock, the test gateway's
        shutil.rmtree(Path(url.removeprefix("sqlite:///")).parent)
    stores = SessionStores(new_database, drop_database, first_pk=1)
    yield stores
    stores.close()


@pytest.fixture(scope="session")
def _pg_stores(own_pg_databases):
    stores = SessionStores(own_pg_databases.take, own_pg_databases.give_back, first_pk=PG_FIRST_SITE_PK)
    yield stores
    stores.close()


@pytest.fixture(scope="module")
def server(request, backend) -> LiveServer:
    """The session's billhive on this backend (tests/support/stores.py): one server for the module's
    tests, on a database it shares with other modules' tests until that holds SITES_PER_DATABASE
    sites; then the next module gets a new one."""
    return request.getfixturevalue("_pg_stores" if backend == "postgres" else "_sqlite_stores").server()


@pytest.fixture(scope="module")
def app(server) -> App:
    return server.app


@pytest.fixture(scope="module")
def database_url(app) -> str:
    """The URL of the session server's database (``app``'s)."""
    return app.config.database_url


@pytest.fixture
def site(server) -> TestSite:
    """A fresh test site (name ends in -test) with a full and a read-only key."""
    return new_site(server)


@pytest.fixture
def live_site(server) -> TestSite:
    return new_site(server, test=False)


@pytest.fixture
def metered_site(server) -> TestSite:
    return new_site(server, metered=True, notify_pending_invoices=True)


@pytest.fixture
def api(site):
    return site.api


@pytest.fixture
def make_site(server):
    def make(**kw) -> TestSite:
        return new_site(server, **kw)
    return make


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "backend" in getattr(item, "fixturenames", ()):
            callspec = getattr(item, "callspec", None)
            if callspec and callspec.params.get("backend") == "postgres":
                item.add_marker(pytest.mark.postgres)
    items[:] = long_ones_first(items)


def long_ones_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """The run order: modules with an ``alone`` test, then modules with a ``slow`` one, then the rest
    (each group, and each module's tests, in collection order; a module stays in one piece, so its
    module-scoped fixtures are made once per worker).

    xdist's worksteal hands each worker a contiguous share of this list and an idle worker steals
    from the end of another's: long tests at the front are spread while there is work to steal, and
    the run does not end on one worker finishing a 20-second crash test while the other waits. The
    ``alone`` tests come first of all: each waits only for the test the other worker is running, and
    at the start that is a short one."""
    def rank(module: list[pytest.Item]) -> int:
        if any(i.get_closest_marker("alone") for i in module):
            return 0
        return 1 if any(i.get_closest_marker("slow") for i in module) else 2
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    ordered = sorted(modules.values(), key=rank)  # stable: collection order within a rank
    return [item for module in ordered for item in module]


@pytest.fixture(scope="session")
def stripe_fake():
    """localstripe, a stateful Stripe fake, on a free port (one per test worker; tests.support.stripe_fake)."""
    fake = StripeFake.start()
    yield fake
    fake.stop()


@pytest.fixture
def stripe_site(server, stripe_fake) -> TestSite:
    """A fresh test site whose gateway is Stripe (the fake)."""
    return new_site(server, **stripe_fake.settings())
