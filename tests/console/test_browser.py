"""The admin console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium,
installed by .ci/run; Playwright's own browser downloads are not used). A failing test leaves a
screenshot of its page (the path is in the failure report; see tests/console/conftest.py).

SQLite only: what the pages show is the API's data, tested on both backends elsewhere
(test_console_http.py); here the browser's side is what is tested."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import os
import re
import shutil
from pathlib import Path

import pytest

from billhive.services import time_machines
from tests.console.conftest import ADMIN_TOKEN
from tests.support import factories
from tests.support.delivery import GENESIS, add_endpoint, emit, wait_until, webhook_deliveries

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")
README_SCREENSHOT = Path(__file__).parents[2] / "docs" / "console.png"


def off_loop(fn, *args):  # type: ignore[no-untyped-def]
    """fn(*args) in another thread: Playwright's sync API keeps an event loop running in this one
    (and a factory may use asyncio.run)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def sign_in(page, server) -> None:  # type: ignore[no-untyped-def]
    page.goto(server.base_url + "/admin")
    assert page.url.endswith("/admin/signin")
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("button:has-text('Sign in')")
    page.wait_for_url("**/admin/sites")


def test_sign_in_search_and_an_invoice_with_its_pdf(browser_page, server, site, console_on, tmp_path):
    page = browser_page
    site.api.post("/customers", {"id": "cus_grace", "email": "grace@example.com", "first_name": "Grace",
                                 "last_name": "Hopper"})
    inv = off_loop(factories.invoice_id, site)  # another customer's, payment_due
    sign_in(page, server)
    page.click(f"text={site.name}")
    page.wait_for_url(f"**/admin/sites/{site.name}")
    assert page.locator(".card", has_text="invoices due").locator(".n").inner_text() == "1"
    shot = tmp_path / "console.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("BILLHIVE_UPDATE_SCREENSHOT") == "1":  # the README's picture: taken here
        shutil.copy(shot, README_SCREENSHOT)

    page.click("nav >> text=Customers")
    page.fill("input[name=q]", "grace@example.com")
    page.click("button:has-text('Search')")
    page.wait_for_url(re.compile(r".*q=grace%40example\.com"))
    page.click("text=cus_grace")
    page.wait_for_url("**/customers/cus_grace")
    assert "Grace Hopper" in page.inner_text("main")

    page.click("nav >> text=Invoices")
    page.fill("input[name='status[is]']", "payment_due")
    page.click("button:has-text('Filter')")
    page.click(f"table >> a[href$='/invoices/{inv}']")
    page.wait_for_url(f"**/invoices/{inv}")
    assert "payment_due" in page.inner_text("h1")
    href = page.get_attribute("text=Download PDF", "href")
    pdf = page.request.get(server.base_url + href)  # the session cookie goes along; redirected to the file
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")


def test_a_failing_webhook_resent_from_the_event_page(browser_page, server, site, console_on, receiver):
    page = browser_page
    receiver.status = 500
    add_endpoint(site, receiver.url)
    ev = emit(site)[0]
    wait_until(lambda: any(d["attempts"] for d in webhook_deliveries(site, ev["id"])), what="a failed attempt")
    sign_in(page, server)
    page.goto(f"{server.base_url}/admin/sites/{site.name}/events?event_type%5Bis%5D=customer_created")
    page.click(f"text={ev['id']}")
    page.wait_for_url(f"**/events/{ev['id']}")
    assert "HTTP 500" in page.inner_text("table.attempts")
    receiver.status = 200
    page.click("button:has-text('Resend')")
    page.wait_for_url("**?resent=1")
    assert "Queued again" in page.inner_text("main")
    wait_until(lambda: any(r.event_id == ev["id"] for r in receiver.received[1:]), what="the resent delivery")
    wait_until(lambda: [d["status"] for d in webhook_deliveries(site, ev["id"])] == ["succeeded"],
               what="the delivery succeeded")
    page.reload()
    assert "succeeded" in page.inner_text("table.attempts") or "succeeded" in page.inner_text("main")


def test_time_travel_shows_its_progress(browser_page, server, site, console_on, monkeypatch):
    page = browser_page
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    factories.plan(site)
    site.api.post("/subscriptions", {"plan_id": "basic", "customer[email]": "tm@example.com",
                                     "customer[auto_collection]": "off"})
    real = time_machines.scheduled.run_due
    real_advance = time_machines.advance
    shown = asyncio.Event()  # set once the page has shown the travel going (set from this thread: see below)
    loop_of_server: list[asyncio.AbstractEventLoop] = []

    async def slow(app, site_pk, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.4)  # each stop of the travel takes a moment: the page can show it going
        return await real(app, site_pk, **kwargs)

    async def held(app, site_pk, *, budget):  # type: ignore[no-untyped-def]
        """Background passes wait until the page has seen the travel in progress (at most 30 s):
        without this, a loaded machine could finish the travel before the page first loads."""
        if budget != time_machines.INLINE_BUDGET:
            loop_of_server[:] = [asyncio.get_running_loop()]
            try:
                await asyncio.wait_for(shown.wait(), 30)
            except TimeoutError:
                pass
        return await real_advance(app, site_pk, budget=budget)

    monkeypatch.setattr(time_machines.scheduled, "run_due", slow)
    monkeypatch.setattr(time_machines, "advance", held)
    monkeypatch.setattr(time_machines, "INLINE_BUDGET", 0.1)  # travel_forward answers after its first stop
    sign_in(page, server)
    page.goto(f"{server.base_url}/admin/sites/{site.name}/time_machine")
    destination = dt.datetime.fromtimestamp(GENESIS + 200 * 86400, dt.UTC)
    page.fill("input[name=destination]", destination.strftime("%Y-%m-%dT%H:%M"))
    with page.expect_navigation(url="**/time_machine"):  # the page it leaves has that URL too: wait for the new one
        page.click("button:has-text('Travel')")
    first = page.inner_text("main")
    assert "Travelling" in first
    wait_until(lambda: bool(loop_of_server), what="a background pass to take the travel up")
    loop_of_server[0].call_soon_threadsafe(shown.set)
    seen = set(re.findall(r"(\d+)%", first))

    def done() -> bool:
        text = page.inner_text("main")  # the page reloads itself every second while travelling
        seen.update(re.findall(r"(\d+)%", text))
        return "succeeded" in page.inner_text("#travel-status")

    wait_until(done, timeout=60, interval=0.2, what="the travel to finish")
    assert len(seen) >= 2, seen  # the progress moved while the page watched
    assert destination.strftime("%Y-%m-%d %H:%M") in page.inner_text("#site-time")
    assert site.api.get("/time_machines/delorean")["time_machine"]["time_travel_status"] == "succeeded"
