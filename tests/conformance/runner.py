"""The conformance run: Schemathesis against billhive's own ``/openapi.json``.

For each backend (a fresh SQLite file; a fresh PostgreSQL database):

1. ``billhive site create conf-test --api-key ...`` on the new database;
2. ``billhive serve`` on a free port, as a subprocess (production settings, background workers on);
3. seed the site: for every path parameter of an implemented operation, a few objects made by the
   factory registered for it in ``tests/support/factories.py`` (the registry the tenant-isolation
   test also uses) - so each implemented operation is exercised on real ids as well as random ones;
4. ``st run`` over every operation in the served spec (the v1 operations billhive implements and
   its documented extensions, billhive/spec/extensions.py), with HTTP Basic auth, a fixed seed and a bounded
   number of examples per operation; the seeded ids go in as a fuzzing dictionary bound to their
   path parameters (used in half the cases), and so do real ``next_offset`` values of the lists;
5. stop the server. The run fails on any Schemathesis failure, and on any error the server logged.

Checks: no 5xx (``not_a_server_error``), every status documented (``status_code_conformance``),
every body valid against the spec (``response_schema_conformance``), JSON content type, 401 without
or with wrong credentials (``ignored_auth``), 405 with ``Allow`` for undeclared methods.
Not checked: ``positive_data_acceptance`` (schema-valid requests may fail business rules - an
unknown offset, a plan that does not exist - with documented 4xx) and ``negative_data_rejection``
(opt in with ``--checks``).

    python -m tests.conformance [--backend all|sqlite|postgres] [--max-examples N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SITE = "conf-test"
SEED = 20240607
# Fuzzing examples per operation: 25 while few operations exist, fewer as they land (never under 5),
# so the run stays near a fixed size (the coverage phase adds ~150 cases per operation regardless).
# Derived from the operation count only, so a run is reproducible from its seed.
CASE_BUDGET = 1000
EXAMPLES_RANGE = (5, 25)
SEEDS_PER_KIND = 3
CHECKS = ("not_a_server_error", "status_code_conformance", "response_schema_conformance",
          "content_type_conformance", "ignored_auth", "unsupported_method", "allow_header_conformance")
PHASES = ("examples", "coverage", "fuzzing", "stateful")
PG_URL = os.environ.get("BILLHIVE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def log(msg: str) -> None:
    print(f"conformance: {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- databases ------------------------------------------------------------------------------

@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="billhive-conf-") as d:
        yield f"sqlite:///{Path(d) / 'conformance.db'}"


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(PG_URL)
    conn = psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database,
                           password=u.password, autocommit=True, connect_timeout=5)
    return conn, u


def postgres_reachable() -> str | None:
    """None if reachable, else why not."""
    try:
        conn, _ = _pg_admin()
    except Exception as exc:
        return str(exc).strip()
    conn.close()
    return None


@contextmanager
def postgres_database() -> Iterator[str]:
    admin, u = _pg_admin()
    name = f"billhive_conf_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield u.set(database=name).render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# ---- the server -----------------------------------------------------------------------------

def billhive(*args: str) -> list[str]:
    return [sys.executable, "-m", "billhive", *args]


@contextmanager
def serve(database_url: str, workdir: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log_path = workdir / "server.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(billhive("serve", "--host", "127.0.0.1", "--port", str(port),
                                         "--database-url", database_url),
                                stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"billhive serve exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"billhive serve did not answer /health:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base, log_path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_errors(log_path: Path) -> list[str]:
    """Lines of the server log that report an error (a traceback, an ERROR record)."""
    lines = log_path.read_text(errors="replace").splitlines()
    marks = ("Traceback", " ERROR ", " CRITICAL ")  # billhive's log format
    starts = ("ERROR:", "CRITICAL:")  # uvicorn's
    return [line for line in lines if any(m in line for m in marks) or line.startswith(starts)]


# ---- seeding ----------------------------------------------------------------------------------

def seed_ids(database_url: str, base_url: str, key: str, path_params: set[str]) -> dict[str, list[str]]:
    """Ids of real objects for each path parameter, made by the registered factories."""
    from billhive import sites
    from billhive.runtime import App, Config
    from tests.support.factories import ID_FACTORIES
    from tests.support.server import Api, TestSite

    class Remote:  # what Api needs of a server: where it is
        def __init__(self, url: str):
            self.base_url = url
            self.port = int(url.rsplit(":", 1)[1])

    app = App.open(Config(database_url=database_url))
    try:
        pk = app.db.read_sync(lambda tx: sites.by_name(tx, SITE)).pk
        api = Api(Remote(base_url), SITE, key, use_host=False)  # type: ignore[arg-type]
        site = TestSite(SITE, pk, key, "", api, app)
        ids: dict[str, list[str]] = {}
        for param in sorted(path_params):
            factory = ID_FACTORIES.get(param)
            if factory is None:
                log(f"no factory for {{{param}}} in tests/support/factories.py: random ids only "
                    f"(the isolation test fails until one is added)")
                continue
            ids[param] = [factory(site) for _ in range(SEEDS_PER_KIND)]
        return ids
    finally:
        app.close()


def seed_offsets(base_url: str, key: str, served: dict) -> list[str]:
    """Real ``next_offset`` values of the implemented list operations (so pagination is reached too)."""
    offsets = []
    for path, item in served["paths"].items():
        get = item.get("get")
        if "{" in path or not get or "offset" not in {p.get("name") for p in get.get("parameters", [])}:
            continue
        r = httpx.get(base_url + "/api/v1" + path, params={"limit": 1}, auth=(key, ""), timeout=30)
        if r.status_code == 200 and r.json().get("next_offset"):
            offsets.append(r.json()["next_offset"])
    return offsets


def schemathesis_config(bindings: dict[str, list[str]]) -> str:
    """schemathesis.toml: real values as dictionaries, each bound to its parameter ("path.event-id",
    "query.offset") and used in half the generated cases."""
    lines = []
    for where, values in bindings.items():
        lines += [f"[dictionaries.{json.dumps(where)}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for where in bindings:
        lines.append(f"{json.dumps(where)} = {{ dictionary = {json.dumps(where)}, probability = 0.5 }}")
    return "\n".join(lines) + "\n"


# ---- one backend ------------------------------------------------------------------------------

def max_examples(n_ops: int) -> int:
    lo, hi = EXAMPLES_RANGE
    return max(lo, min(hi, CASE_BUDGET // max(1, n_ops)))


def run_backend(backend: str, database_url: str, args: argparse.Namespace) -> bool:
    started = time.monotonic()
    key = f"test_conf_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="billhive-st-") as tmp:
        workdir = Path(args.report_dir or tmp) / backend
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(billhive("site", "create", SITE, "--api-key", key, "--database-url", database_url),
                       check=True, stdout=subprocess.DEVNULL, cwd=workdir)
        with serve(database_url, workdir) as (base, log_path):
            served = httpx.get(base + "/openapi.json", timeout=10).json()
            # the admin API (its own server, the admin token) is off here and has its own tests
            served["paths"] = {p: item for p, item in served["paths"].items() if not p.startswith("/admin/")}
            path_params = {seg[1:-1] for path in served["paths"] for seg in path.split("/") if seg.startswith("{")}
            n_ops = sum(1 for item in served["paths"].values() for op in item.values() if isinstance(op, dict))
            ids = seed_ids(database_url, base, key, path_params)
            config = workdir / "schemathesis.toml"
            bindings = {f"path.{param}": values for param, values in ids.items()}
            offsets = seed_offsets(base, key, served)
            if offsets:
                bindings["query.offset"] = offsets
            config.write_text(schemathesis_config(bindings))
            examples = args.max_examples or max_examples(n_ops)
            log(f"{backend}: {n_ops} operations, {examples} examples each; seeded "
                f"{', '.join(f'{{{k}}}: {len(v)}' for k, v in ids.items()) or 'nothing'}; "
                f"{len(offsets)} list offsets")
            st = Path(sys.executable).with_name("st")
            cmd = [str(st) if st.exists() else "st", "--config-file", str(config), "run", base + "/openapi.json",
                   "--auth", f"{key}:", "--seed", str(args.seed), "--max-examples", str(examples),
                   "--checks", args.checks, "--phases", args.phases, "--workers", str(args.workers),
                   "--exclude-path-regex", "^/admin/", "--generation-database", "none", "--no-color",
                   "--request-timeout", "30"]
            if args.report_dir:
                cmd += ["--report", "junit,har", "--report-dir", str(workdir)]
            cmd += args.st_args
            env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.conformance.hooks",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
            try:
                result = subprocess.run(cmd, cwd=workdir, env=env, timeout=args.timeout)
                st_ok = result.returncode == 0
            except subprocess.TimeoutExpired:
                log(f"{backend}: schemathesis did not finish within {args.timeout}s")
                st_ok = False
        errors = server_errors(log_path)
        if errors:
            log(f"{backend}: the server logged errors:\n" + log_path.read_text(errors="replace")[-20000:])
        ok = st_ok and not errors
        log(f"{backend}: {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.0f}s")
        return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.conformance", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("all", "sqlite", "postgres"), default="all",
                   help="all: SQLite, then PostgreSQL if reachable (required when BILLHIVE_REQUIRE_PG=1)")
    p.add_argument("--max-examples", type=int, help="per operation (default: from the number of operations, "
                   f"{CASE_BUDGET} / operations within {EXAMPLES_RANGE[0]}..{EXAMPLES_RANGE[1]})")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--checks", default=",".join(CHECKS))
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--timeout", type=int, default=300, help="seconds Schemathesis may take per backend (a hang guard)")
    p.add_argument("--report-dir", help="keep the server log, schemathesis.toml and the JUnit report here")
    p.add_argument("st_args", nargs="*", help="more `st run` options, after --")
    args = p.parse_args(argv)

    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    if "postgres" in backends:
        why = postgres_reachable()
        if why is not None:
            if args.backend == "postgres" or os.environ.get("BILLHIVE_REQUIRE_PG") == "1":
                log(f"PostgreSQL is required but unreachable: {why}")
                return 1
            log(f"PostgreSQL unreachable, skipped: {why}")
            backends.remove("postgres")
    ok = True
    for backend in backends:
        database = sqlite_database() if backend == "sqlite" else postgres_database()
        with database as url:
            ok = run_backend(backend, url, args) and ok
    return 0 if ok else 1
