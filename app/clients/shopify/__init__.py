"""Shopify GraphQL Admin client (see UPSTREAMS.md "Shopify GraphQL Admin API").

`client` holds the one method per operation, `graphql` the request layer (pacing, delivery,
refusals, tokens, the answered API version), `tokens` where tokens come from (static, or the
client credentials grant), `bulk` the bulk export, `webhooks` shop-scoped subscriptions,
`health` the `/readyz` checks, `models` what comes back, `errors` what a refusal means,
`queries` every document sent. Everything a caller needs is importable from here.
"""

from app.clients.shopify.client import (
    PAGE_SIZE,
    RECOVERY_TRANSACTION_PAGES,
    SANDBOX_ACCESS_TOKEN,
    ShopifyClient,
    access_tokens,
)
from app.clients.shopify.errors import (
    UPSTREAM,
    ShopifyAuthError,
    ShopifyCodeTaken,
    ShopifyInsufficientFunds,
    ShopifyInvalidInput,
    ShopifyNotFound,
    ShopifyUnavailable,
    ShopifyUnknownOutcome,
    ShopifyUserError,
)
from app.clients.shopify.graphql import MUTATION_COST
from app.clients.shopify.health import ShopifyHealth
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
from app.clients.shopify.tokens import (
    SHOPIFY_TOKEN_PROVIDER,
    AccessTokens,
    ClientCredentialsTokens,
    StaticToken,
)
from app.clients.shopify.webhooks import (
    SubscriptionAction,
    WebhookSubscription,
    plan_subscriptions,
    subscriptions_check,
    sync_subscriptions,
)

__all__ = [
    "MUTATION_COST",
    "PAGE_SIZE",
    "RECOVERY_TRANSACTION_PAGES",
    "SANDBOX_ACCESS_TOKEN",
    "SHOPIFY_TOKEN_PROVIDER",
    "UPSTREAM",
    "AccessTokens",
    "ClientCredentialsTokens",
    "CreatedGiftCard",
    "GiftCardMove",
    "GiftCardTransaction",
    "OrderGiftCardLine",
    "OrderTransaction",
    "ShopifyAuthError",
    "ShopifyClient",
    "ShopifyCodeTaken",
    "ShopifyGiftCard",
    "ShopifyHealth",
    "ShopifyInsufficientFunds",
    "ShopifyInvalidInput",
    "ShopifyNotFound",
    "ShopifyOrder",
    "ShopifyUnavailable",
    "ShopifyUnknownOutcome",
    "ShopifyUserError",
    "StaticToken",
    "SubscriptionAction",
    "WebhookSubscription",
    "access_tokens",
    "gid",
    "idempotency_key_from_note",
    "idempotency_note",
    "masked_code",
    "parse_gift_card",
    "plan_subscriptions",
    "subscriptions_check",
    "sync_subscriptions",
]
