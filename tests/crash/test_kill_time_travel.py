"""A time travel survives the death of its server: SIGKILL in the middle of a long travel, restart,
and the travel resumes where it stopped (once the dead process's lease has run out) and ends
with every renewal done exactly once - never half of one."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select

from billhive.store import schema as S
from tests.support import factories as F
from tests.support import subs
from tests.support.crash import open_site
from tests.support.process import ServerProcess
from tests.support.server import Api
from tests.support.timemachine import TM, wait_for_travel

pytestmark = pytest.mark.slow
SUBSCRIPTIONS = 8
MONTHS = 6
# the dead server's lease on the travel runs out after 2 s, not 10 (the restarted one waits for it:
# the takeover is what is tested, not its default delay)
LEASE = {"BILLHIVE_TIME_TRAVEL_LEASE": "2"}


@dataclass
class Remote:  # what the tests.support helpers use of a TestSite: its API client
    api: Api


def test_sigkill_mid_travel_then_the_travel_resumes_after_restart(crash_db, tmp_path):
    h = open_site(crash_db, "tt")
    app, name, key = h.app, h.name, h.key
    log = tmp_path / "server.log"
    # the 3rd batch of jobs kills the server: after the renewals of the 3rd month committed
    server = ServerProcess(crash_db, failpoints="time_travel.batch:3", log_path=log, extra_env=LEASE)
    try:
        api = Api(server, name, key)  # type: ignore[arg-type]
        remote = Remote(api)
        subs.start(remote)  # type: ignore[arg-type]
        subs.plan(remote, "monthly", 1000)  # type: ignore[arg-type]
        ids = [api.post(f"/customers/{F.customer_with_card_id(remote)}/subscriptions",  # type: ignore[arg-type]
                        {"plan_id": "monthly"})["subscription"]["id"] for _ in range(SUBSCRIPTIONS)]
        try:
            api.post(TM + "/travel_forward", {"destination_time": subs.GENESIS + MONTHS * 31 * subs.DAY})
        except httpx.HTTPError:
            pass  # the server died while the request was still travelling
        assert server.wait_exit() != 0, "the failpoint should have killed the server"
        status = app.db.read_sync(lambda tx: tx.scalar(select(S.sites.c.tm_status).where(S.sites.c.pk == h.pk)))
        assert status == "in_progress"

        server = ServerProcess(crash_db, log_path=log, extra_env=LEASE)  # a restart: its time travel loop takes over
        api = Api(server, name, key)  # type: ignore[arg-type]
        tm = wait_for_travel(api, timeout=120)
        assert tm["time_travel_status"] == "succeeded"
        for sub_id in ids:
            invoices = subs.invoices(Remote(api), sub_id)  # type: ignore[arg-type]
            assert len(invoices) == MONTHS + 1, [i["end_date"] for i in invoices]
            ends = [i["end_date"] for i in invoices]
            assert len(set(ends)) == len(ends)  # no renewal twice
            sub = api.get(f"/subscriptions/{sub_id}")["subscription"]
            assert sub["status"] == "active" and sub["current_term_start"] <= tm["destination_time"]
    finally:
        server.stop()
        app.close()
