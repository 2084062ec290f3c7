"""Where the HTTP limits come from: Config defaults, BILLHIVE_* variables, serve flags, and the
connection cap fitted to the open file limit."""

from __future__ import annotations

import resource

import pytest

from billhive.cli import parser
from billhive.http import protocol
from billhive.runtime import HTTP_LIMITS, Config


def test_defaults_suit_a_production_server():
    c = Config()
    assert c.max_header_bytes == 16 * 1024 and c.max_body_bytes == 1 << 20
    assert (c.header_timeout, c.body_timeout, c.keep_alive_timeout) == (10.0, 30.0, 5.0)
    assert c.max_connections == 4096


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("BILLHIVE_HEADER_TIMEOUT", "2.5")
    monkeypatch.setenv("BILLHIVE_MAX_CONNECTIONS", "100")
    c = Config.from_env()
    assert c.header_timeout == 2.5 and c.max_connections == 100
    for bad in ("0", "-1", "many", "1.5"):
        monkeypatch.setenv("BILLHIVE_MAX_CONNECTIONS", bad)
        with pytest.raises(ValueError, match="max_connections must be a positive whole number"):
            Config.from_env()


def test_limits_from_serve_flags(capsys):
    args = parser().parse_args(["serve", "--header-timeout", "3", "--max-connections", "50",
                                "--max-body-bytes", "2048"])
    assert (args.header_timeout, args.max_connections, args.max_body_bytes) == (3.0, 50, 2048)
    assert all(getattr(parser().parse_args(["serve"]), name) is None for name in HTTP_LIMITS)
    with pytest.raises(SystemExit):
        parser().parse_args(["serve", "--keep-alive-timeout", "0"])
    assert "keep_alive_timeout must be a positive number" in capsys.readouterr().err


def test_the_connection_cap_leaves_room_in_the_file_limit():
    c = Config()
    roomy = protocol.limits_for(c, 1 << 20)
    assert roomy.max_connections == 4096 and roomy.max_open > roomy.max_connections
    tight = protocol.limits_for(c, 1024)
    assert tight.max_connections == 1024 - protocol.FD_RESERVE - protocol.REFUSAL_ROOM
    assert tight.max_open == 1024 - protocol.FD_RESERVE
    assert protocol.limits_for(c, resource.RLIM_INFINITY).max_connections == 4096
    assert protocol.limits_for(c, 10).max_connections == 1  # absurdly low: still serves, one at a time
    c.max_connections = 10
    assert protocol.limits_for(c, 1024).max_connections == 10


def test_uvicorn_is_given_the_limits():
    c = Config(keep_alive_timeout=7.0, header_timeout=3.0, max_header_bytes=8192)
    options = protocol.uvicorn_options(c)
    assert options["timeout_keep_alive"] == 7.0 and options["h11_max_incomplete_event_size"] == 8192
    assert options["http"] == "billhive.http.protocol:LimitedHttpToolsProtocol"
    assert protocol.LimitedHttpToolsProtocol.limits.header_timeout == 3.0
    protocol.configure(Config())
