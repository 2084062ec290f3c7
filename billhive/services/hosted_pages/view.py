"""What the browser sees of a hosted page (http/hosted.py renders it): the view model of the
templates - the page, its title, what the checkout will bill (the operation's estimate, or why it
cannot be completed as it stands) and the form's prefill. The first visit marks the page
``requested``; after ``expires_at`` it no longer opens (the state stays as it was: Chargebee has
no expired state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from billhive import gateway as gateways
from billhive.errors import BillhiveError
from billhive.services.hosted_pages import checkout as flow
from billhive.services.hosted_pages import pages
from billhive.store.resources import PLANS
from billhive.work.context import Ctx, Work


async def open_page(ctx: Ctx, page_id: str) -> PageView:
    """The page as the browser sees it; the first visit marks it requested."""
    page, checkout = await ctx.read(pages.require, page_id)
    if checkout.get("in_flight"):
        await ctx.write(flow.settle_in_flight, page_id)
    elif page["state"] == "created":
        def request(w: Work) -> None:
            p, chk = pages.require(w, page_id, for_update=True)
            if p["state"] == "created" and not pages.is_expired(p, w.now):
                p["state"] = "requested"
                pages.save(w, p, chk, "created")
        await ctx.write(request)
    page, checkout = await ctx.read(pages.require, page_id)
    return await ctx.read(_view, page, checkout)


async def view_of(ctx: Ctx, page_id: str) -> PageView:
    """The page as it is now, without visiting it (after a submission or cancellation)."""
    page, checkout = await ctx.read(pages.require, page_id)
    return await ctx.read(_view, page, checkout)


@dataclass
class PageView:
    page: dict
    checkout: dict
    title: str = ""
    currency_code: str = "USD"
    estimate: dict | None = None  # what the checkout bills (the operation's estimate)
    error: str | None = None  # the checkout cannot be completed as it stands
    prefill: dict = field(default_factory=dict)
    expired: bool = False

    @property
    def open(self) -> bool:
        """Whether the page shows its form (else its state: done, cancelled, expired, processing)."""
        return self.page["state"] in pages.OPEN and not self.expired and not self.checkout.get("in_flight")


# ---- helpers ------------------------------------------------------------------------------------

def _view(w: Work, page: dict, checkout: dict) -> PageView:
    view = PageView(page, checkout, _title(w, page, checkout), w.site.currency_code,
                    expired=pages.is_expired(page, w.now))
    if page["type"] == "checkout_new":
        c = checkout["customer"]
        view.prefill = {k: c[k] for k in ("email", "first_name", "last_name") if c.get(k)}
    if view.open:
        try:
            gateways.for_site(w.app.gateways, w.site)  # no card form on a site that cannot take cards
            view.estimate = _estimate(w, page, checkout)
        except BillhiveError as exc:  # e.g. the plan was archived since: say so instead of a form
            view.error = exc.message
    return view


def _title(w: Work, page: dict, checkout: dict) -> str:
    p = checkout["params"]
    if page["type"] == "checkout_new":
        plan = PLANS.get(w.tx, w.site_id, p["plan_id"]) or {}
        return f"Subscribe to {plan.get('invoice_name') or plan.get('name') or p['plan_id']}"
    if page["type"] == "checkout_existing":
        return "Update your subscription"
    if page["type"] == "checkout_onetime_charge":
        return f"Pay for {p['description']}"
    return "Buy add-ons"


def _estimate(w: Work, page: dict, checkout: dict) -> dict:
    if page["type"] == "checkout_new":
        return pages.check_new(w, checkout)
    if page["type"] == "checkout_existing":
        return pages.check_existing(w, checkout)
    return pages.check_one_off(w, page["type"], checkout)
