"""The official Node.js client chargebee@1.x from npm, installed once per version into a cache folder
(``$BILLHIVE_NODE_CACHE``, default ``~/.cache/billhive/node/chargebee@VERSION``) and reused.

Without node or npm, or when npm cannot install it, tests that need it skip - unless
``BILLHIVE_REQUIRE_NODE=1`` (.ci/run sets it): then they fail."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

VERSION = "1.3.7"


def unavailable(reason: str) -> None:
    if os.environ.get("BILLHIVE_REQUIRE_NODE") == "1":
        pytest.fail(f"the Node.js client tests must run (BILLHIVE_REQUIRE_NODE=1): {reason}")
    pytest.skip(reason)


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "billhive" / "node"
    return Path(os.environ.get("BILLHIVE_NODE_CACHE") or default)


def install_chargebee(version: str = VERSION) -> Path:
    """The installed package's folder (``.../node_modules/chargebee``); installs it on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are needed (Node.js 20: apt-get install nodejs npm)")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"chargebee@{version}"
    package = target / "node_modules" / "chargebee"
    with open(root / ".lock", "w") as lock:  # xdist workers and parallel runs install it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (package / "package.json").exists():
            staging = Path(tempfile.mkdtemp(dir=root, prefix=".install-"))
            done = subprocess.run([str(npm), "install", "--no-audit", "--no-fund", "--no-save", "--prefix",
                                   str(staging), f"chargebee@{version}"], capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                shutil.rmtree(staging, ignore_errors=True)
                unavailable(f"npm install chargebee@{version} failed: {done.stderr[-2000:]}")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)  # whole or not at all: a half-done install is never reused
    installed = json.loads((package / "package.json").read_text())["version"]
    assert installed == version, f"{package} holds chargebee {installed}, not {version}"
    return package
