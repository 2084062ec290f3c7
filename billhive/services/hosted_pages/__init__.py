"""Hosted pages: /api/v1/hosted_pages/... - checkout pages that billhive serves itself
(billhive/http/hosted.py), in place of Chargebee's.

The page's life (states per Chargebee: created -> requested -> succeeded | cancelled), by module:

- ``api``       the v1 operations: creating a page checks the checkout (the estimate of the
                operation it will run) and stores it; retrieving it
- ``view``      opening the url marks the page ``requested`` and shows what will be billed
                (the view model of the templates)
- ``checkout``  submitting the form runs the operation the API would run with the form's card;
                cancelling; a one-off charge in flight is finished once settled
- ``pages``     the page as stored, and the checks api and view share

Pages expire ``expires_at`` = created_at + 3 h on the site clock (Chargebee's figure for checkout
pages). The names other modules use are importable from here.
"""

from billhive.services.hosted_pages.api import (
    checkout_existing,
    checkout_new,
    checkout_onetime_addons,
    checkout_onetime_charge,
    retrieve,
)
from billhive.services.hosted_pages.checkout import (
    HOSTED_PAGE,
    CheckoutForm,
    Closed,
    FormError,
    Submitted,
    cancel,
    submit,
)
from billhive.services.hosted_pages.pages import OPEN, TTL, is_expired, page_url
from billhive.services.hosted_pages.view import PageView, open_page, view_of

__all__ = [
    "HOSTED_PAGE", "OPEN", "TTL", "CheckoutForm", "Closed", "FormError", "PageView", "Submitted", "cancel",
    "checkout_existing", "checkout_new", "checkout_onetime_addons", "checkout_onetime_charge", "is_expired",
    "open_page", "page_url", "retrieve", "submit", "view_of",
]
