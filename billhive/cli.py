"""The ``billhive`` command: serve, worker, migrate, site, webhook."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
import uvicorn
from uvicorn.supervisors import Multiprocess

from billhive import sites, webhook_endpoints
from billhive.errors import BillhiveError, SettingError, StoreError
from billhive.http import seeds
from billhive.http.app import ApiEndpoint, build
from billhive.http.protocol import uvicorn_options
from billhive.http.routes import ROUTES, Route
from billhive.runtime import DEFAULT_DATABASE_URL, HTTP_LIMITS, App, Config, http_limit
from billhive.services import snapshots
from billhive.sites import COLUMN_SETTINGS, SETTINGS, WEBHOOK_SETTINGS
from billhive.store import migrate
from billhive.store.db import check_writable
from billhive.util import logs
from billhive.worker import BackgroundLock, run_background


def _db_url(args: argparse.Namespace) -> str:
    return args.database_url or Config.from_env().database_url


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help=f"default: $BILLHIVE_DATABASE_URL or {DEFAULT_DATABASE_URL}")


def _open(args: argparse.Namespace) -> App:
    url = _db_url(args)
    migrate.upgrade(url)
    return App.open(Config.from_env(database_url=url))


_HTTP_LIMIT_HELP = {
    "max_header_bytes": "largest request line and headers, in bytes (431 beyond)",
    "max_body_bytes": "largest API request body, in bytes (413 beyond)",
    "header_timeout": "seconds a request's line and headers may take to arrive (408, then closed)",
    "body_timeout": "seconds a request's body may take to arrive after its headers (408, then closed)",
    "keep_alive_timeout": "seconds an idle keep-alive connection is kept open",
    "max_connections": "connections served at once, lowered to fit the open file limit (503 beyond)",
}


def _add_http_limits(p: argparse.ArgumentParser) -> None:
    for name in HTTP_LIMITS:
        def parse(raw: str, name: str = name) -> float | int:
            try:
                return http_limit(name, raw)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        p.add_argument("--" + name.replace("_", "-"), type=parse, metavar="N",
                       help=f"{_HTTP_LIMIT_HELP[name]}; default ${'BILLHIVE_' + name.upper()} or "
                            f"{getattr(Config, name)}")


def _add_log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=logs.FORMATS, default=Config.from_env().log_format,
                   help="text (default) or json: one JSON object a line ($BILLHIVE_LOG_FORMAT)")


def _fail(msg: str) -> int:
    print(f"billhive: {msg}", file=sys.stderr)
    return 2


# ---- serve / worker / migrate ------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    """Bind the port, check the database can be written, migrate, then announce and serve:
    nothing is printed as started, and nothing runs, before each of those has worked."""
    logs.configure(args.log_format)
    # The database writer thread releases the GIL for every fsync and needs it back quickly;
    # with the default 5 ms switch interval a busy event loop makes it wait (a GIL convoy).
    sys.setswitchinterval(Config.from_env().switch_interval)
    url = _db_url(args)
    if url.startswith("sqlite") and args.workers > 1:
        return _fail("SQLite serves one process (one writer); use PostgreSQL for --workers > 1")
    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        return _fail(f"cannot listen on {_display_host(args.host)}:{args.port}: {exc.strerror or exc}")
    try:
        app = _open_service(url)
    except StoreError as exc:
        sock.close()
        return _fail(exc.message)
    app.config.host, app.config.port, app.config.domain = args.host, args.port, args.domain
    app.config.public_url = args.public_url or app.config.public_url
    app.config.background = not args.no_background
    app.config.admin_token = args.admin_token or app.config.admin_token
    app.config.admin_readonly_token = args.admin_readonly_token or app.config.admin_readonly_token
    app.config.log_format = args.log_format
    for name in HTTP_LIMITS:
        if getattr(args, name) is not None:
            setattr(app.config, name, getattr(args, name))
    lock = BackgroundLock.for_app(app) if app.config.background else None
    if lock is not None and not lock.acquire():
        print(f"billhive: another billhive process ({lock.holder() or 'unknown'}) runs the background work "
              f"(scheduler, webhook and email delivery, payment recovery) on {app.db.path}; this one serves the "  # type: ignore[attr-defined]
              f"API only, and takes the background work over when that process stops", flush=True)
    now = int(time.time())
    existing = app.db.read_sync(lambda tx: sites.all_sites(tx))
    if not existing:
        site, keys = app.db.write_sync(lambda tx: sites.create(tx, "demo-test", now=now))
        key = keys["full"]
        print(f"\nCreated the test site 'demo-test' with full-access API key:\n\n    {key}\n")
        print("Try it:\n")
        print(f"    curl -u {key}: http://{_display_host(args.host)}:{args.port}/api/v1/events\n")
        print(f"(or with the site in the host name: http://demo-test.{args.domain}:{args.port}/api/v1/...)\n",
              flush=True)
    else:
        names = ", ".join(s.name for s in existing)
        print(f"billhive: serving sites {names} from {_redact(url)}", flush=True)
    print(f"billhive: listening on http://{_display_host(args.host)}:{args.port}  (API under /api/v1)", flush=True)
    if args.workers > 1:
        app.close()
        # each worker process reads this process's configuration from its environment (the
        # workers' own host/port are not ours: links are built on this server's base URL)
        app.config.database_url, app.config.public_url = url, app.config.base_url
        os.environ.update(app.config.environ())
        config = uvicorn.Config("billhive.http.asgi:create_app", factory=True, host=args.host, port=args.port,
                                workers=args.workers, access_log=args.access_log, log_level="info", log_config=None,
                                loop="uvloop", **uvicorn_options(app.config))
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[sock]).run()
        return 0
    background = (lambda a: run_background(a, lock)) if app.config.background else None
    asgi = build(app, background=background, extra_routes=getattr(args, "extra_routes", ()))
    server = uvicorn.Server(uvicorn.Config(asgi, host=args.host, port=args.port, access_log=args.access_log,
                                           log_level="info", log_config=None, loop="uvloop", lifespan="on",
                                           **uvicorn_options(app.config)))
    app.on_fatal.append(lambda reason: setattr(server, "should_exit", True))
    _tune_gc()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down on, once it has
        pass
    finally:
        app.close()
        if lock is not None:
            lock.release()
    if app.fatal_error:
        return 1  # a supervisor should restart us
    return 0 if server.started else 3


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts (uvicorn serves on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)  # --workers: the worker processes serve on it too
    return sock


def _open_service(url: str) -> App:
    """serve / worker: refuse a database this process cannot write (StoreError, naming it),
    apply migrations, open the app."""

    check_writable(url)
    migrate.upgrade(url)
    return App.open(Config.from_env(database_url=url))


def _tune_gc() -> None:
    """Request handling allocates many short-lived dicts; the default GC thresholds make the
    cyclic collector run (and pause every thread) every few hundred requests. Objects made
    at start-up are frozen out of its sight, and young collections happen less often."""
    if Config.from_env().gc_defaults:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # pragma: no cover
        return url


def cmd_worker(args: argparse.Namespace) -> int:
    logs.configure(args.log_format)
    try:
        app = _open_service(_db_url(args))
    except StoreError as exc:
        return _fail(exc.message)
    lock = BackgroundLock.for_app(app)
    if lock is not None and not lock.acquire():
        print(f"billhive worker: another billhive process ({lock.holder() or 'unknown'}) runs the background work "
              f"on {app.db.path}; waiting to take it over when that process stops", flush=True)  # type: ignore[attr-defined]
    else:
        print(f"billhive worker: running background jobs on {_redact(_db_url(args))}", flush=True)

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        def stop(reason: str) -> None:
            loop.call_soon_threadsafe(task.cancel)
        app.on_fatal.append(stop)
        await run_background(app, lock)

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    except Exception as exc:
        app.fatal(str(exc))
    finally:
        app.close()
    return 1 if app.fatal_error else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    migrate.upgrade(_db_url(args))
    print("billhive: database is up to date")
    return 0


# ---- site ------------------------------------------------------------------------------------

def cmd_site_create(args: argparse.Namespace) -> int:
    app = _open(args)
    try:
        site, keys = app.db.write_sync(lambda tx: sites.create(
            tx, args.name, now=int(time.time()), currency=args.currency, metered_billing=args.metered_billing,
            api_key=args.api_key, read_only_key=args.read_only_key))
    except SettingError as exc:
        return _fail(str(exc))
    finally:
        app.close()
    kind = "test" if site.is_test else "live"
    print(f"Created {kind} site {site.name}")
    print(f"full-access key: {keys['full']}")
    if "read_only" in keys:
        print(f"read-only key:   {keys['read_only']}")
    return 0


def cmd_site_set(args: argparse.Namespace) -> int:
    assignments: dict[str, str] = {}
    for item in args.assignments:
        if "=" not in item:
            return _fail(f"expected SETTING=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        assignments[k.strip()] = v
    app = _open(args)
    try:
        site = app.db.write_sync(lambda tx: sites.set_settings(tx, args.name, assignments, int(time.time())))
        shown = app.db.read_sync(lambda tx: sites.describe(tx, site))
    except SettingError as exc:
        return _fail(str(exc))
    finally:
        app.close()
    print(json.dumps(shown, indent=2))
    return 0


def cmd_site_show(args: argparse.Namespace) -> int:
    app = _open(args)
    try:
        shown = app.db.read_sync(lambda tx: sites.describe(tx, sites.require(tx, args.name)))
    except SettingError as exc:
        return _fail(str(exc))
    finally:
        app.close()
    print(json.dumps(shown, indent=2))
    return 0


def _run_async(args: argparse.Namespace, fn: Any) -> Any:
    """``fn(app)`` (a coroutine function) on a freshly opened app; BillhiveErrors become
    ``billhive: <message>`` and exit status 2."""
    app = _open(args)

    async def main() -> Any:
        return await fn(app)
    try:
        return asyncio.run(main())
    finally:
        app.close()


def cmd_site_seed(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as f:
            doc = seeds.parse(f.read())
        result = _run_async(args, lambda app: seeds.load(app, ApiEndpoint(app, ROUTES).call, args.name, doc))
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc.strerror}")
    except BillhiveError as exc:
        return _fail(exc.message)
    print(json.dumps(result, indent=2))
    return 0


def cmd_site_snapshot(args: argparse.Namespace) -> int:
    try:
        doc = _run_async(args, lambda app: snapshots.snapshot(app, args.name))
    except BillhiveError as exc:
        return _fail(exc.message)
    sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
    return 0


def cmd_site_restore(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as f:
            doc = orjson.loads(f.read())
        result = _run_async(args, lambda app: snapshots.restore(app, args.name, doc))
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc.strerror}")
    except orjson.JSONDecodeError:
        return _fail(f"{args.file} is not JSON (a snapshot from billhive site snapshot)")
    except BillhiveError as exc:
        return _fail(exc.message)
    print(json.dumps(result, indent=2))
    return 0


def cmd_site_list(args: argparse.Namespace) -> int:
    app = _open(args)
    try:
        for s in app.db.read_sync(sites.all_sites):
            print(f"{s.name}\t{'test' if s.is_test else 'live'}\t{s.currency_code}")
    finally:
        app.close()
    return 0


def cmd_site_settings(args: argparse.Namespace) -> int:
    for s in SETTINGS.values():
        print(f"{s.name:30} default {json.dumps(s.default):40} {s.help}")
    for name in COLUMN_SETTINGS:
        print(f"{name:30}")
    for name in WEBHOOK_SETTINGS:
        print(f"{name:30} (manages the webhook endpoint named 'default')")
    return 0


# ---- site key --------------------------------------------------------------------------------------

def cmd_site_key_add(args: argparse.Namespace) -> int:
    app = _open(args)
    try:
        key = app.db.write_sync(lambda tx: sites.new_api_key(
            tx, sites.require(tx, args.name), read_only=args.read_only, now=int(time.time()), key=args.key,
            name=args.key_name))
    except SettingError as exc:
        return _fail(str(exc))
    finally:
        app.close()
    print(f"{'read-only' if args.read_only else 'full-access'} key: {key}")
    print("(shown only now: billhive keeps its SHA-256 hash)")
    return 0


def cmd_site_key_list(args: argparse.Namespace) -> int:
    app = _open(args)
    try:
        keys = app.db.read_sync(lambda tx: sites.list_keys(tx, sites.require(tx, args.name).pk))
    except SettingError as exc:
        return _fail(str(exc))
    finally:
        app.close()
    print(json.dumps(keys, indent=2, ensure_ascii=False))
    return 0


def cmd_site_key_revoke(args: argparse.Namespace) -> int:
    app = _open(args)
    try:
        gone = app.db.write_sync(lambda tx: sites.revoke_key(tx, sites.require(tx, args.name).pk, args.key))
        ttl = app.config.cache_ttl
    except SettingError as exc:
        return _fail(str(exc))
    finally:
        app.close()
    print(f"revoked {gone['access']} key {gone['hint']} ({gone['name']}); running servers stop accepting it "
          f"within {ttl:g} s (their key cache, BILLHIVE_CACHE_TTL)")
    return 0


# ---- webhook -----------------------------------------------------------------------------------

def cmd_webhook_add(args: argparse.Namespace) -> int:
    types = [t.strip() for t in args.event_types.split(",") if t.strip()] if args.event_types else None
    app = _open(args)
    try:
        ep = app.db.write_sync(lambda tx: webhook_endpoints.add(
            tx, sites.require(tx, args.site).pk, args.url, now=int(time.time()), username=args.username,
            password=args.password, secret=args.secret, event_types=types))
    except SettingError as exc:
        return _fail(str(exc))
    finally:
        app.close()
    print(json.dumps(webhook_endpoints.describe(ep), indent=2))
    return 0


def cmd_webhook_list(args: argparse.Namespace) -> int:
    app = _open(args)
    try:
        eps = app.db.read_sync(lambda tx: webhook_endpoints.list_all(tx, sites.require(tx, args.site).pk))
    except SettingError as exc:
        return _fail(str(exc))
    finally:
        app.close()
    print(json.dumps([webhook_endpoints.describe(e) for e in eps], indent=2))
    return 0


def cmd_webhook_remove(args: argparse.Namespace) -> int:
    app = _open(args)
    try:
        ok = app.db.write_sync(lambda tx: webhook_endpoints.remove(tx, sites.require(tx, args.site).pk, args.id))
    except SettingError as exc:
        return _fail(str(exc))
    finally:
        app.close()
    if not ok:
        return _fail(f"no webhook endpoint {args.id!r} on site {args.site}")
    print(f"removed webhook endpoint {args.id}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="billhive", description="Subscription billing server speaking Chargebee API v1")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the API server (applies migrations; creates demo-test on an empty database)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--domain", default=Config.from_env().domain,
                   help="sites are addressed as {site}.DOMAIN (default localhost)")
    s.add_argument("--workers", type=int, default=1, help="API processes (PostgreSQL only)")
    s.add_argument("--no-background", action="store_true", help="do not run the scheduler/delivery workers here")
    s.add_argument("--access-log", action="store_true")
    s.add_argument("--public-url", default=Config.from_env().public_url,
                   help="base URL clients reach this server at, for download links such as invoice PDFs "
                        "(default http://HOST:PORT; $BILLHIVE_PUBLIC_URL)")
    s.add_argument("--admin-token", default=None,
                   help="turn on the admin API (/admin/api) and console (/admin), authenticated by this token "
                        "($BILLHIVE_ADMIN_TOKEN; off when unset)")
    s.add_argument("--admin-readonly-token", default=None,
                   help="a second token: signed in with it the console shows everything and changes nothing "
                        "($BILLHIVE_ADMIN_READONLY_TOKEN)")
    _add_log_format(s)
    _add_db(s)
    _add_http_limits(s)
    s.set_defaults(fn=cmd_serve)

    w = sub.add_parser("worker", help="run the scheduler and delivery workers without the API")
    _add_db(w)
    _add_log_format(w)
    w.set_defaults(fn=cmd_worker)

    m = sub.add_parser("migrate", help="apply pending database migrations")
    _add_db(m)
    m.set_defaults(fn=cmd_migrate)

    site = sub.add_parser("site", help="manage sites").add_subparsers(dest="site_command", required=True)
    c = site.add_parser("create", help="create a site (a name ending in -test makes a test site)")
    c.add_argument("name")
    c.add_argument("--api-key")
    c.add_argument("--read-only-key")
    c.add_argument("--currency", default="USD")
    c.add_argument("--metered-billing", action="store_true")
    _add_db(c)
    c.set_defaults(fn=cmd_site_create)
    st = site.add_parser("set", help="change settings: billhive site set NAME SETTING=VALUE ...")
    st.add_argument("name")
    st.add_argument("assignments", nargs="+")
    _add_db(st)
    st.set_defaults(fn=cmd_site_set)
    sh = site.add_parser("show", help="show a site's settings, keys and webhook endpoints")
    sh.add_argument("name")
    _add_db(sh)
    sh.set_defaults(fn=cmd_site_show)
    sd = site.add_parser("seed", help="load a seed file (YAML or JSON: plans, addons, coupons, customers, "
                                      "subscriptions, webhook endpoints) through the API's operations")
    sd.add_argument("name")
    sd.add_argument("file")
    _add_db(sd)
    sd.set_defaults(fn=cmd_site_seed)
    sn = site.add_parser("snapshot", help="print everything of a site as JSON: billhive site snapshot NAME > FILE")
    sn.add_argument("name")
    _add_db(sn)
    sn.set_defaults(fn=cmd_site_snapshot)
    rs = site.add_parser("restore", help="replace a site's data by a snapshot's (the target keeps its own keys "
                                         "unless the snapshot is of the same site)")
    rs.add_argument("name")
    rs.add_argument("file")
    _add_db(rs)
    rs.set_defaults(fn=cmd_site_restore)
    ls = site.add_parser("list", help="list sites")
    _add_db(ls)
    ls.set_defaults(fn=cmd_site_list)
    se = site.add_parser("settings", help="list every setting with its default")
    se.set_defaults(fn=cmd_site_settings)
    key = site.add_parser("key", help="API keys: add, list, revoke").add_subparsers(dest="key_command",
                                                                                    required=True)
    ka = key.add_parser("add", help="add an API key (printed once)")
    ka.add_argument("name", help="the site")
    ka.add_argument("--read-only", action="store_true", help="a read-only key (default: full access)")
    ka.add_argument("--key", help="use this key instead of a generated one")
    ka.add_argument("--key-name", help="the key's name (shown as the user of the events it causes)")
    _add_db(ka)
    ka.set_defaults(fn=cmd_site_key_add)
    kl = key.add_parser("list", help="list a site's keys (hints only, never the keys)")
    kl.add_argument("name", help="the site")
    _add_db(kl)
    kl.set_defaults(fn=cmd_site_key_list)
    kr = key.add_parser("revoke", help="revoke a key, given by its hint or the key itself")
    kr.add_argument("name", help="the site")
    kr.add_argument("key", metavar="HINT_OR_KEY")
    _add_db(kr)
    kr.set_defaults(fn=cmd_site_key_revoke)

    wh = sub.add_parser("webhook", help="manage webhook endpoints").add_subparsers(dest="webhook_command",
                                                                                   required=True)
    wa = wh.add_parser("add")
    wa.add_argument("site")
    wa.add_argument("url")
    wa.add_argument("--username")
    wa.add_argument("--password")
    wa.add_argument("--secret")
    wa.add_argument("--event-types", help="comma-separated; default all")
    _add_db(wa)
    wa.set_defaults(fn=cmd_webhook_add)
    wl = wh.add_parser("list")
    wl.add_argument("site")
    _add_db(wl)
    wl.set_defaults(fn=cmd_webhook_list)
    wr = wh.add_parser("remove")
    wr.add_argument("site")
    wr.add_argument("id")
    _add_db(wr)
    wr.set_defaults(fn=cmd_webhook_remove)
    return p


def main(argv: list[str] | None = None, *, extra_routes: Sequence[Route] = ()) -> int:
    """The command. ``extra_routes``: API routes ``serve`` mounts beyond billhive's (the benchmark's
    ceiling: ``python -m bench.ceiling serve ...``)."""
    args: Any = parser().parse_args(argv)
    args.extra_routes = tuple(extra_routes)
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
