"""Issue 14 part 8: the second official client. The Node.js client ``chargebee@1.3.7`` (Chargebee API v1)
is installed from npm, unmodified, and runs a billing story (tests/sdk/node/story.js: a plan, a customer
with a card, a subscription, time travel to a metered renewal, add_charge on the pending invoice, collect,
errors, lists paged by next_offset) against a real billhive server on each store.

The install is cached by version (tests/support/node.py), so only the first run downloads. Without node
or npm (or without the registry) the test skips - unless ``BILLHIVE_REQUIRE_NODE=1`` (.ci/run): then it
fails."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import node
from tests.support.server import new_site

STORY = Path(__file__).parent / "node" / "story.js"


@pytest.fixture(scope="session")
def chargebee_node() -> Path:
    return node.install_chargebee()


def test_a_billing_story_through_the_node_client(server, chargebee_node):
    site = new_site(server, metered=True)
    env = {**os.environ, "CHARGEBEE_MODULE": str(chargebee_node), "BILLHIVE_PORT": str(server.port),
           "BILLHIVE_API_KEY": site.key}
    done = subprocess.run(["node", str(STORY)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"ok": True, "steps": ["start_afresh", "plan", "customer with a card", "subscription",
                                            "time travel to a metered renewal", "add_charge", "collect", "errors",
                                            "lists with next_offset"]}
    # what the client did is what the site holds
    invoices = site.api.get("/invoices", {"customer_id[is]": "node-ada", "status[is]": "paid"}).body["list"]
    assert sorted(e["invoice"]["amount_paid"] for e in invoices) == [2000, 2350]
