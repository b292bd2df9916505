"""Lightspeed OnSite client (see UPSTREAMS.md "Lightspeed OnSite").

`client` holds the one method per operation, `session` the one login a client keeps, `wire`
the XML as read and written, `setup` the product and payment method its invoices name, `errors` what a refusal means. Everything a caller needs is
importable from here.
"""

from app.clients.onsite.client import PAGE_SIZE, OnSiteClient
from app.clients.onsite.errors import (
    UPSTREAM,
    OnSiteAuthError,
    OnSiteError,
    OnSiteUnavailable,
    OnSiteUnknownOutcome,
)
from app.clients.onsite.setup import OnSiteSetupError
from app.clients.onsite.wire import (
    OnSiteCustomer,
    OnSiteGiftCardLine,
    OnSiteGiftCardPayment,
    OnSiteInvoice,
    build_balance_move,
    parse_customer,
    parse_full_invoice,
)

__all__ = [
    "PAGE_SIZE",
    "UPSTREAM",
    "OnSiteAuthError",
    "OnSiteClient",
    "OnSiteCustomer",
    "OnSiteError",
    "OnSiteGiftCardLine",
    "OnSiteGiftCardPayment",
    "OnSiteInvoice",
    "OnSiteSetupError",
    "OnSiteUnavailable",
    "OnSiteUnknownOutcome",
    "build_balance_move",
    "parse_customer",
    "parse_full_invoice",
]
