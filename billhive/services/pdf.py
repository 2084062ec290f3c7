"""Invoice PDFs: the signed download link (retrieve_invoice_as_pdf) and the document (fpdf2).

- ``POST /invoices/{id}/pdf`` answers ``{"download": {"download_url", "valid_till"}}``. The URL is
  served by billhive itself: ``{base_url}/downloads/invoices/{token}.pdf`` (base_url is
  ``--public-url``, else ``http://host:port``), where the token names the site and the invoice and
  carries ``valid_till`` (site clock + 60 minutes, as Chargebee documents), HMAC-signed with the
  site's download key (``sites.download_key``, random, made on first use and kept in the database,
  so every API process signs and checks alike).
- The document is rendered when downloaded, from the invoice as it is then (a pending invoice
  closed meanwhile is found by its old draft id and shows its number).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from billhive import sites
from billhive.domain.invoices import issue_date
from billhive.domain.money import format_amount
from billhive.errors import NotFound
from billhive.store import schema as S
from billhive.store.db import Tx
from billhive.store.resources import CUSTOMERS, INVOICES
from billhive.util import signing
from billhive.util.lazy import lazy_module

if TYPE_CHECKING:
    import fpdf

    from billhive.runtime import App
else:
    fpdf = lazy_module("fpdf")  # fpdf2, imported by the first PDF rendered (billhive.util.lazy)

LINK_TTL = 3600  # seconds: "The URL will expire in 60 minutes."
PURPOSE = "invoice-pdf"
_keys: dict[tuple[str, int], bytes] = {}  # (database URL, site) -> signing key (constant once created)


# ---- the signing key ------------------------------------------------------------------------------

def _load_key(tx: Tx, site_pk: int) -> str | None:
    t = S.sites
    return tx.scalar(select(t.c.download_key).where(t.c.pk == site_pk))


def _create_key(tx: Tx, site_pk: int) -> str | None:
    t = S.sites  # a conditional update: two processes racing both end up with the winner's key
    tx.execute(update(t).where(t.c.pk == site_pk, t.c.download_key.is_(None))
               .values(download_key=secrets.token_urlsafe(48)))
    return _load_key(tx, site_pk)


async def signing_key(app: App, site_pk: int, *, create: bool = True) -> bytes | None:
    """The site's key for signing download links (made on first use when ``create``); None: no
    such site, or (not ``create``) no link was ever made for it."""
    cache = (app.db.url, site_pk)
    key = _keys.get(cache)
    if key is None:
        value = await app.db.read(lambda tx: _load_key(tx, site_pk))
        if value is None and create:
            value = await app.db.write(lambda tx: _create_key(tx, site_pk))
        if value is None:
            return None
        key = _keys[cache] = value.encode("ascii")
    return key


# ---- links ----------------------------------------------------------------------------------------

async def download_link(app: App, site_pk: int, invoice_id: str, now: int) -> dict:
    valid_till = now + LINK_TTL
    key = await signing_key(app, site_pk)
    assert key is not None  # the caller's own site
    token = signing.sign(key, PURPOSE, [site_pk, invoice_id, valid_till])
    url = f"{app.config.base_url.rstrip('/')}/downloads/invoices/{token}.pdf"
    return {"download_url": url, "valid_till": valid_till}


class LinkError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def open_link(app: App, token: str) -> tuple[bytes, str]:
    """The PDF a download token points to: (pdf bytes, invoice id). Raises LinkError."""
    invalid = LinkError(404, "This download link is not valid.")
    claimed = signing.peek(token)  # which site's key to check it with
    if not claimed or not isinstance(claimed[0], int) or isinstance(claimed[0], bool):
        raise invalid
    key = await signing_key(app, claimed[0], create=False)
    payload = signing.verify(key, PURPOSE, token) if key else None
    if payload is None or len(payload) != 3 or not isinstance(payload[1], str) or not isinstance(payload[2], int):
        raise invalid
    site_pk, invoice_id, valid_till = payload

    def load(tx: Tx) -> tuple[dict, dict | None, sites.Site] | None:
        try:
            site = sites.load(tx, site_pk)
        except NotFound:
            return None
        if site.now(app.wall) > valid_till:
            raise LinkError(403, "This download link has expired; ask for a new one.")
        inv = INVOICES.get(tx, site_pk, invoice_id)
        if inv is None:  # a pending invoice closed since: found by its draft id
            found = INVOICES.find(tx, site_pk, INVOICES.t.c.draft_id == invoice_id, limit=1)
            inv = found[0] if found else None
        if inv is None:
            return None
        return inv, CUSTOMERS.get(tx, site_pk, inv["customer_id"]), site

    found = await app.db.read(load)
    if found is None:
        raise LinkError(404, "The invoice of this download link no longer exists.")
    inv, customer, site = found
    data = await asyncio.to_thread(render_invoice, inv, customer, site.name, site.now(app.wall),
                                   app.config.pdf_font_dir)
    return data, inv["id"]


# ---- the document -----------------------------------------------------------------------------------

_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/local/share/fonts/dejavu")
_STATUS = {"paid": "Paid", "payment_due": "Payment due", "not_paid": "Not paid", "voided": "Voided",
           "pending": "Pending (draft)"}


def _unicode_font(extra: str | None = None) -> tuple[str, str] | None:
    """DejaVu Sans (regular, bold) when installed (or in ``extra``, Config.pdf_font_dir): any
    script prints; else the PDF core font."""
    for d in ((extra,) if extra else ()) + _FONT_DIRS:
        regular, bold = Path(d) / "DejaVuSans.ttf", Path(d) / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return str(regular), str(bold)
    return None


def _date(ts: Any) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%b %d, %Y")


def _address(addr: dict | None) -> list[str]:
    if not addr:
        return []
    name = " ".join(x for x in (addr.get("first_name"), addr.get("last_name")) if x)
    city = " ".join(x for x in (addr.get("city"), addr.get("state") or addr.get("state_code"), addr.get("zip")) if x)
    lines = [name, addr.get("company"), addr.get("line1"), addr.get("line2"), addr.get("line3"), city,
             addr.get("country"), addr.get("email"), addr.get("phone")]
    return [str(x) for x in lines if x]


@functools.cache
def _doc_class() -> Any:
    """The PDF document class (made when the first PDF is rendered: its base is fpdf2's)."""
    class Doc(fpdf.FPDF):
        def __init__(self, font: tuple[str, str] | None):
            super().__init__(format="A4")
            self.unicode = font is not None
            if font:
                self.add_font("body", "", font[0])
                self.add_font("body", "B", font[1])
                self.family = "body"
            else:
                self.family = "Helvetica"
            self.set_auto_page_break(True, margin=18)
            self.set_margins(16, 16, 16)

        def t(self, text: Any) -> str:
            s = "" if text is None else str(text)
            return s if self.unicode else s.encode("latin-1", "replace").decode("latin-1")

        def font(self, size: float, bold: bool = False) -> None:
            self.set_font(self.family, "B" if bold else "", size)

        def footer(self) -> None:
            self.set_y(-12)
            self.font(7)
            self.set_text_color(120)
            self.cell(0, 5, self.t(f"Page {self.page_no()}"), align="R")
            self.set_text_color(0)

    return Doc


def render_invoice(inv: dict, customer: dict | None, seller: str, now: int, font_dir: str | None = None) -> bytes:
    """The invoice as a PDF document: number, dates, status, customer, line items, discounts,
    totals, payments and notes."""
    cur = inv.get("currency_code", "USD")

    def money(v: Any) -> str:
        return format_amount(int(v or 0), cur)

    pdf = _doc_class()(_unicode_font(font_dir))
    XPos, YPos = fpdf.XPos, fpdf.YPos  # noqa: N806 (fpdf2's enums)
    number = inv["id"] if inv["status"] != "pending" else f"Draft {inv['id']}"
    pdf.set_title(f"Invoice {inv['id']}")
    pdf.set_author(seller)
    pdf.set_creator("billhive")
    pdf.set_creation_date(dt.datetime.fromtimestamp(now, dt.UTC))
    pdf.add_page()
    width = pdf.epw

    # header: seller left, INVOICE and its facts right
    pdf.font(16, True)
    pdf.cell(width / 2, 9, pdf.t(seller))
    pdf.cell(width / 2, 9, "INVOICE", align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    facts = [("Invoice number", number), ("Invoice date", _date(issue_date(inv))),
             ("Status", _STATUS.get(inv["status"], inv["status"]))]
    if inv.get("end_date"):
        facts.append(("Closed on", _date(inv["end_date"])))
    if inv.get("paid_on"):
        facts.append(("Paid on", _date(inv["paid_on"])))
    if inv.get("po_number"):
        facts.append(("PO number", inv["po_number"]))
    if inv.get("subscription_id"):
        facts.append(("Subscription", inv["subscription_id"]))
    if inv.get("dunning_status") == "in_progress" and inv.get("next_retry"):
        facts.append(("Next payment attempt", _date(inv["next_retry"])))
    for label, value in facts:
        pdf.font(9)
        pdf.cell(width - 60, 5, pdf.t(label + ":"), align="R")
        pdf.font(9, True)
        pdf.cell(60, 5, pdf.t(value), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)

    # parties
    bill_to = _address(inv.get("billing_address"))
    if customer:
        who = " ".join(x for x in (customer.get("first_name"), customer.get("last_name")) if x)
        head = [x for x in (who, customer.get("company"), customer.get("email")) if x]
        bill_to = head + [x for x in bill_to if x not in head]
    bill_to = bill_to or [inv["customer_id"]]
    ship_to = _address(inv.get("shipping_address"))
    top = pdf.get_y()
    pdf.font(9, True)
    pdf.cell(width / 2, 5, "Bill to", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.font(9)
    for line in bill_to + [f"Customer id: {inv['customer_id']}"]:
        pdf.cell(width / 2, 4.5, pdf.t(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    left_end = pdf.get_y()
    if ship_to:
        pdf.set_xy(pdf.l_margin + width / 2, top)
        pdf.font(9, True)
        pdf.cell(width / 2, 5, "Ship to", new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.font(9)
        for line in ship_to:
            pdf.cell(width / 2, 4.5, pdf.t(line), new_x=XPos.LEFT, new_y=YPos.NEXT)
    pdf.set_xy(pdf.l_margin, max(left_end, pdf.get_y()) + 5)

    # line items
    pdf.font(9)
    with pdf.table(col_widths=(64, 52, 12, 25, 25), text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT"),
                   line_height=5.5, first_row_as_headings=True) as table:
        table.row([pdf.t(h) for h in ("Description", "Period", "Qty", "Unit price", "Amount")])
        for li in inv.get("line_items", ()):
            start, end = _date(li.get("date_from")), _date(li.get("date_to"))
            period = start if start == end else f"{start} - {end}"
            table.row([pdf.t(li.get("description", "")), pdf.t(period), str(li.get("quantity", 1)),
                       pdf.t(money(li.get("unit_amount"))), pdf.t(money(li.get("amount")))])
    pdf.ln(3)

    # totals
    rows: list[tuple[str, str, bool]] = [("Sub total", money(inv.get("sub_total")), False)]
    for d in inv.get("discounts", ()):
        label = d.get("description") or {"coupon": "Coupon", "account_credits": "Promotional credits",
                                         "credit_adjustment": "Credit adjustment"}.get(d.get("type"), "Discount")
        rows.append((label, "-" + money(d.get("amount")), False))
    taxes = _tax_rows(inv, money)
    inclusive = inv.get("price_type") == "tax_inclusive"
    if not inclusive:
        rows += taxes
    rows.append(("Total", money(inv.get("amount")), True))
    if inclusive:  # the tax is inside the prices: shown, not added
        rows += [(f"Includes {label}", value, bold) for label, value, bold in taxes]
    if inv.get("credits_applied"):
        rows.append(("Credits applied", "-" + money(inv["credits_applied"]), False))
    if inv.get("amount_paid"):
        rows.append(("Amount paid", "-" + money(inv["amount_paid"]), False))
    if inv.get("amount_adjusted"):
        rows.append(("Amount adjusted", "-" + money(inv["amount_adjusted"]), False))
    rows.append(("Amount due", money(inv.get("amount_due")), True))
    for label, value, bold in rows:
        pdf.font(10, bold)
        pdf.cell(width - 45, 6, pdf.t(label), align="R")
        pdf.cell(45, 6, pdf.t(value), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    payments = [lt for lt in inv.get("linked_transactions", ()) if lt.get("applied_amount")  # failed attempts
                and not (lt.get("txn_type") == "payment" and lt.get("txn_status") == "failure")]  # paid nothing
    if payments:
        pdf.ln(4)
        pdf.font(10, True)
        pdf.cell(0, 6, "Payments", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.font(9)
        for lt in payments:
            kind = "Refund" if lt.get("txn_type") == "refund" else "Payment"
            status = lt.get("txn_status") or ""
            pdf.cell(0, 5, pdf.t(f"{_date(lt.get('applied_at'))}  {kind} {lt['txn_id']}  {status}  "
                                 f"{money(lt['applied_amount'])}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    notes = [n.get("note") for n in inv.get("notes", ()) if n.get("note")]
    if notes:
        pdf.ln(4)
        pdf.font(10, True)
        pdf.cell(0, 6, "Notes", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.font(9)
        for note in notes:
            pdf.multi_cell(0, 5, pdf.t(note), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


def _tax_rows(inv: dict, money: Callable[[Any], str]) -> list[tuple[str, str, bool]]:
    """One row per tax of ``taxes[]`` ("Sales tax @ 10%"), or one "Tax" row for a tax without them."""
    rows = [(t.get("description") or "Tax", money(t.get("amount")), False) for t in inv.get("taxes", ())
            if t.get("amount")]
    if not rows and inv.get("tax"):
        rows.append(("Tax", money(inv["tax"]), False))
    return rows
