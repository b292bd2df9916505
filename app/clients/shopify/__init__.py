"""Shopify GraphQL Admin client (see UPSTREAMS.md "Shopify GraphQL Admin API").

`client` holds the one method per operation, `graphql` the request layer (pacing, delivery,
refusals), `bulk` the bulk export, `models` what comes back, `errors` what a refusal means,
`queries` every document sent. Everything a caller needs is importable from here.
"""

from app.clients.shopify.client import (
    PAGE_SIZE,
    RECOVERY_TRANSACTION_PAGES,
    SANDBOX_ACCESS_TOKEN,
    ShopifyClient,
)
from app.clients.shopify.errors import (
    UPSTREAM,
    ShopifyCodeTaken,
    ShopifyInsufficientFunds,
    ShopifyInvalidInput,
    ShopifyNotFound,
    ShopifyUnavailable,
    ShopifyUnknownOutcome,
    ShopifyUserError,
)
from app.clients.shopify.graphql import MUTATION_COST
from app.clients.shopify.models import (
    CreatedGiftCard,
    GiftCardMove,
    GiftCardTransaction,
    OrderGiftCardLine,
    OrderTransaction,
    ShopifyGiftCard,
    ShopifyOrder,
    gid,
    idempotency_key_from_note,
    idempotency_note,
    masked_code,
    parse_gift_card,
)

__all__ = [
    "MUTATION_COST",
    "PAGE_SIZE",
    "RECOVERY_TRANSACTION_PAGES",
    "SANDBOX_ACCESS_TOKEN",
    "UPSTREAM",
    "CreatedGiftCard",
    "GiftCardMove",
    "GiftCardTransaction",
    "OrderGiftCardLine",
    "OrderTransaction",
    "ShopifyClient",
    "ShopifyCodeTaken",
    "ShopifyGiftCard",
    "ShopifyInsufficientFunds",
    "ShopifyInvalidInput",
    "ShopifyNotFound",
    "ShopifyOrder",
    "ShopifyUnavailable",
    "ShopifyUnknownOutcome",
    "ShopifyUserError",
    "gid",
    "idempotency_key_from_note",
    "idempotency_note",
    "masked_code",
    "parse_gift_card",
]
