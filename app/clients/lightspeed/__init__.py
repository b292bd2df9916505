"""Lightspeed Retail (R-Series) API V3 client (see UPSTREAMS.md "Lightspeed Retail").

`client` holds the one method per operation, `oauth` the rotating tokens, `pacing` the leaky
bucket, `models` the string-typed wire format, `errors` what a refusal means. Everything a
caller needs is importable from here.
"""

from app.clients.lightspeed.client import PAGE_LIMIT, LightspeedClient
from app.clients.lightspeed.errors import (
    UPSTREAM,
    LightspeedAuthError,
    LightspeedError,
    LightspeedUnavailable,
    LightspeedUnknownOutcome,
)
from app.clients.lightspeed.models import (
    LsCustomer,
    LsGiftCard,
    LsGiftCardPayment,
    as_list,
    card_money,
    parse_customer,
    parse_gift_card,
    parse_payment,
)
from app.clients.lightspeed.oauth import REFRESH_MARGIN
from app.clients.lightspeed.pacing import LeakyBucket, sale_cost

__all__ = [
    "PAGE_LIMIT",
    "REFRESH_MARGIN",
    "UPSTREAM",
    "LeakyBucket",
    "LightspeedAuthError",
    "LightspeedClient",
    "LightspeedError",
    "LightspeedUnavailable",
    "LightspeedUnknownOutcome",
    "LsCustomer",
    "LsGiftCard",
    "LsGiftCardPayment",
    "as_list",
    "card_money",
    "parse_customer",
    "parse_gift_card",
    "parse_payment",
    "sale_cost",
]
