"""Download routes: ``GET /downloads/invoices/{token}.pdf`` serves the PDF that a signed link from
``POST /api/v1/invoices/{id}/pdf`` points to (see billhive/services/pdf.py). No API key: the
signed, expiring token is the authorisation, as with Chargebee's download URLs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from billhive.runtime import App
from billhive.services import pdf


def routes(app: App) -> list[BaseRoute]:
    async def invoice_pdf(request: Request) -> Response:
        try:
            data, invoice_id = await pdf.open_link(app, request.path_params["token"])
        except pdf.LinkError as exc:
            return PlainTextResponse(exc.message, status_code=exc.status, headers={"cache-control": "no-store"})
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in invoice_id)
        return Response(data, media_type="application/pdf", headers={
            "content-disposition": f'inline; filename="invoice-{safe}.pdf"',
            "cache-control": "private, no-store",
        })

    return [Route("/downloads/invoices/{token}.pdf", invoice_pdf, methods=["GET"])]
