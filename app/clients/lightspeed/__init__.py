"""Lightspeed Retail (R-Series) API V3 client (see UPSTREAMS.md "Lightspeed Retail").

`client` holds the one method per operation, `oauth` the rotating tokens, `pacing` the leaky
bucket and the burst limiter, `setup` the shop, register, employee and payment type every sale
names (read back and judged), `sales` the documented sale shapes, `models` the string-typed
wire format, `errors` what a refusal means. Everything a caller needs is importable from here.
"""

from app.clients.lightspeed.client import LightspeedClient
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
    cursor_text,
    parse_customer,
    parse_gift_card,
)
from app.clients.lightspeed.oauth import REFRESH_MARGIN
from app.clients.lightspeed.pacing import BurstWindow, LeakyBucket, sale_cost
from app.clients.lightspeed.setup import GIFT_CARD_SCOPE, LightspeedSetupError, SaleSetup
from app.clients.lightspeed.wire import PAGE_LIMIT

__all__ = [
    "GIFT_CARD_SCOPE",
    "PAGE_LIMIT",
    "REFRESH_MARGIN",
    "UPSTREAM",
    "BurstWindow",
    "LeakyBucket",
    "LightspeedAuthError",
    "LightspeedClient",
    "LightspeedError",
    "LightspeedSetupError",
    "LightspeedUnavailable",
    "LightspeedUnknownOutcome",
    "LsCustomer",
    "LsGiftCard",
    "LsGiftCardPayment",
    "SaleSetup",
    "as_list",
    "card_money",
    "cursor_text",
    "parse_customer",
    "parse_gift_card",
    "sale_cost",
]
