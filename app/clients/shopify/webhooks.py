"""Shop-scoped webhook subscriptions, for a legacy admin-created app (a static token, no TOML).

A Dev Dashboard app declares its subscriptions in `shopify.app.toml`; those are app-scoped and
the `webhookSubscriptions` query does not list them (its own description says so), so nothing
here touches them. For a legacy app the API is the only way: `plan_subscriptions` compares what
Shopify lists with what giftsync needs at `{PUBLIC_URL}/webhooks/shopify`, `sync_subscriptions`
makes it so, `subscriptions_check` is the `/readyz` view of the same comparison.

"Ours" means delivered to our host (PUBLIC_URL's): such a subscription for another address or a
topic giftsync no longer needs is stale and removed. Anything for another host is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from app.clients.shopify.graphql import ShopifyGraphQL, raise_user_errors
from app.shopify_app_config import WEBHOOK_PATH, WEBHOOK_TOPICS

_PAGE = 100


def topic_enum(topic: str) -> str:
    """`orders/paid` -> `ORDERS_PAID` (WebhookSubscriptionTopic); an enum value stays as it is."""
    return topic.strip().upper().replace("/", "_")


def webhook_url(public_url: str) -> str:
    return f"{public_url.rstrip('/')}{WEBHOOK_PATH}"


@dataclass(frozen=True)
class WebhookSubscription:
    id: str
    topic: str
    """As Shopify names it: `ORDERS_PAID`."""
    uri: str
    format: str = "JSON"


@dataclass(frozen=True)
class SubscriptionPlan:
    target: str
    kept: list[WebhookSubscription] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Topics (enum form) with no subscription to `target`."""
    stale: list[WebhookSubscription] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not self.missing and not self.stale


@dataclass(frozen=True)
class SubscriptionAction:
    action: str
    """`kept`, `created`, `removed`; or, not applied, `missing` / `stale`."""
    topic: str
    uri: str
    id: str | None


def _host(uri: str) -> str:
    parts = urlsplit(uri)
    return parts.netloc.lower() if parts.scheme in ("http", "https") else ""


def plan_subscriptions(
    existing: list[WebhookSubscription],
    public_url: str,
    topics: tuple[str, ...] = WEBHOOK_TOPICS,
) -> SubscriptionPlan:
    target = webhook_url(public_url)
    needed = [topic_enum(topic) for topic in topics]
    our_host = _host(target)
    kept: list[WebhookSubscription] = []
    stale: list[WebhookSubscription] = []
    for sub in existing:
        if sub.uri == target and sub.topic in needed and sub.format == "JSON":
            kept.append(sub)
        elif our_host and _host(sub.uri) == our_host:
            stale.append(sub)
    covered = {sub.topic for sub in kept}
    return SubscriptionPlan(
        target=target,
        kept=kept,
        missing=[topic for topic in needed if topic not in covered],
        stale=stale,
    )


def _subscription(node: dict[str, Any]) -> WebhookSubscription:
    return WebhookSubscription(
        id=str(node["id"]),
        topic=str(node["topic"]),
        uri=str(node.get("uri") or ""),
        format=str(node.get("format") or "JSON"),
    )


class ShopifyWebhooks(ShopifyGraphQL):
    async def list_webhook_subscriptions(self) -> list[WebhookSubscription]:
        """The shop-scoped subscriptions this app made through the API (every page)."""
        found: list[WebhookSubscription] = []
        after: str | None = None
        while True:
            data = await self._query("WebhookSubscriptions", {"first": _PAGE, "after": after})
            connection = data["webhookSubscriptions"]
            found.extend(_subscription(node) for node in connection["nodes"])
            page = connection.get("pageInfo") or {}
            after = page.get("endCursor") if page.get("hasNextPage") else None
            if after is None:
                return found

    async def create_webhook_subscription(self, topic: str, callback_url: str) -> str:
        """Subscribe `callback_url`; `topic` as `orders/paid` or `ORDERS_PAID`."""
        variables = {
            "topic": topic_enum(topic),
            # `callbackUrl` is deprecated for `uri`.
            "webhookSubscription": {"uri": callback_url, "format": "JSON"},
        }
        # A repeat after a lost answer is refused as taken at worst, never doubled.
        data = await self._query("WebhookSubscriptionCreate", variables)
        payload = data["webhookSubscriptionCreate"]
        raise_user_errors(payload["userErrors"])
        return str(payload["webhookSubscription"]["id"])

    async def delete_webhook_subscription(self, subscription_id: str) -> None:
        """Gone afterwards either way: deleting one already deleted is refused, and ignored."""
        data = await self._query("WebhookSubscriptionDelete", {"id": subscription_id})
        payload = data["webhookSubscriptionDelete"]
        if payload.get("deletedWebhookSubscriptionId"):
            return
        remaining = {sub.id for sub in await self.list_webhook_subscriptions()}
        if subscription_id in remaining:
            raise_user_errors(payload["userErrors"])


async def sync_subscriptions(
    client: ShopifyWebhooks,
    public_url: str,
    *,
    apply: bool = True,
    topics: tuple[str, ...] = WEBHOOK_TOPICS,
) -> list[SubscriptionAction]:
    """Create what is missing for `{public_url}/webhooks/shopify`, remove our stale ones.

    With `apply=False` nothing changes: the actions say `missing` and `stale` instead.
    """
    plan = plan_subscriptions(await client.list_webhook_subscriptions(), public_url, topics)
    actions = [SubscriptionAction("kept", sub.topic, sub.uri, sub.id) for sub in plan.kept]
    # New ones first, so deliveries never pause; but one in the way of a new one (same topic
    # and address, wrong format) must go before it, as Shopify refuses the pair twice.
    in_the_way = [s for s in plan.stale if s.uri == plan.target and s.topic in plan.missing]
    later = [s for s in plan.stale if s not in in_the_way]

    async def remove(subs: list[WebhookSubscription]) -> None:
        for sub in subs:
            if apply:
                await client.delete_webhook_subscription(sub.id)
            action = "removed" if apply else "stale"
            actions.append(SubscriptionAction(action, sub.topic, sub.uri, sub.id))

    await remove(in_the_way)
    for topic in plan.missing:
        created = await client.create_webhook_subscription(topic, plan.target) if apply else None
        action = "created" if apply else "missing"
        actions.append(SubscriptionAction(action, topic, plan.target, created))
    await remove(later)
    return actions


async def subscriptions_check(client: ShopifyWebhooks, public_url: str | None) -> dict[str, Any]:
    """The `/readyz` check for a legacy app: do Shopify's subscriptions match PUBLIC_URL?"""
    if not public_url:
        return {
            "ok": False,
            "severity": "warning",
            "detail": "PUBLIC_URL is not set: webhook subscriptions cannot be checked",
        }
    plan = plan_subscriptions(await client.list_webhook_subscriptions(), public_url)
    detail: dict[str, Any] = {"target": plan.target, "missing": plan.missing}
    detail["stale"] = [{"topic": sub.topic, "uri": sub.uri} for sub in plan.stale]
    if not plan.matches:
        detail["fix"] = "giftsync shopify webhooks"
    return {"ok": plan.matches, "severity": "warning", **detail}
