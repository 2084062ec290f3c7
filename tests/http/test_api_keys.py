"""API keys added and revoked with `billhive site key` while servers run: a revoked key is
refused (401) by every process within its key cache's lifetime (Config.cache_ttl)."""

from __future__ import annotations

import time

import pytest

from billhive.cli import main
from billhive.runtime import App, Config
from tests.support.server import LiveServer, new_site

TTL = 0.5


@pytest.fixture
def quick_server(database_url, app):  # `app`: the session's, which migrated the database
    a = App.open(Config(database_url=database_url, cache_ttl=TTL))
    server = LiveServer(a, background=False)
    yield server
    server.stop()
    a.close()


def test_revoked_key_gets_401_within_the_cache_ttl(quick_server, database_url, capsys):
    site = new_site(quick_server)
    assert main(["site", "key", "add", site.name, "--database-url", database_url]) == 0
    added = capsys.readouterr().out.split("full-access key: ", 1)[1].split()[0]
    api, other = site.api, site.api.with_key(added)
    api.get("/events")  # both keys work, and are now in the server's cache
    other.get("/events")
    assert main(["site", "key", "revoke", site.name, site.key, "--database-url", database_url]) == 0
    revoked_at = time.monotonic()
    while api.get("/events", expect=None).status != 401:
        assert time.monotonic() - revoked_at < TTL + 1.0, "the revoked key still works after the cache TTL"
        time.sleep(0.05)
    r = api.get("/events", expect=401)
    assert r["api_error_code"] == "api_authentication_failed"
    other.get("/events")  # the key that was not revoked keeps working
    # a key added while the server runs works at once (keys not yet seen are not cached)
    assert main(["site", "key", "add", site.name, "--read-only", "--database-url", database_url]) == 0
    ro = capsys.readouterr().out.split("read-only key: ", 1)[1].split()[0]
    api.with_key(ro).get("/events")
    api.with_key(ro).post("/customers", {"first_name": "A"}, expect=403)
