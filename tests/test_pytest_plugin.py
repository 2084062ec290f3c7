"""billhive's pytest plugin (billhive/testing/pytest_plugin.py), as a user's suite meets it: the
README's example test, run as printed by a pytest of its own in a folder of its own - once with
the plugin starting its own server under pytest-xdist (one site per test), once against this
suite's running server through --billhive-url / --billhive-admin-token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- plugin-example[^>]*-->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its plugin example"
    return match.group(1)


# This suite's own test tools (billhive's `test` extra) that register pytest plugins a user's suite
# does not have: each costs every process of the pytest below ~1 s of CPU to load (three processes
# under -n 2), and the example uses neither.
OUR_PLUGINS = ("-p", "no:schemathesis", "-p", "no:hypothesispytest")


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLHIVE_", "PYTEST_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *OUR_PLUGINS, *args],
                          check=False, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def test_the_readme_example_passes_as_printed_under_xdist(tmp_path):
    example = readme_example()
    assert len(example.strip().splitlines()) <= 10
    # the example twice over, and a test that its site is its own: under -n 2 sites never mix
    (tmp_path / "test_example.py").write_text(example + '''

def test_the_example_again(chargebee_site):
    test_a_customer_subscribes(chargebee_site)


def test_each_test_has_a_fresh_site(billhive_site, chargebee_site):
    assert billhive_site.name.endswith("-test")
    assert list(chargebee_site.Customer.list({"limit": 5})) == []
''')
    r = run_pytest(tmp_path, "-n", "2")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "3 passed" in r.stdout


def test_an_existing_server_by_url_and_token(tmp_path, server, monkeypatch):
    monkeypatch.setattr(server.app.config, "admin_token", "plugin-test-token")
    (tmp_path / "test_example.py").write_text(readme_example())
    r = run_pytest(tmp_path, "--billhive-url", server.base_url, "--billhive-admin-token", "plugin-test-token")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "1 passed" in r.stdout
