"""Shopify GraphQL Admin client: gift cards, customers, orders, bulk export, webhooks.

Thin by design: one typed method per operation, no business rules. Writes that must not be
applied twice go through the delivery policy with a look-up of their own: a created card by its
code, a credit or debit by the idempotency key in its note, a customer by email, a bulk
operation by its query. Documents live in `queries`; tokens come from `tokens` (a static token,
or the client credentials grant); webhook subscriptions are in `webhooks`.

Never logged: the access token and full gift card codes (only their last 4 characters).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import httpx

from app.clients.delivery import AnswerLost
from app.clients.shopify.bulk import ShopifyBulkExport
from app.clients.shopify.errors import (
    ShopifyCodeTaken,
    ShopifyNotFound,
    ShopifyUnknownOutcome,
)
from app.clients.shopify.graphql import raise_user_errors
from app.clients.shopify.models import (
    CreatedGiftCard,
    GiftCardMove,
    GiftCardTransaction,
    ShopifyGiftCard,
    ShopifyOrder,
    decimal_text,
    gid,
    idempotency_note,
    masked_code,
    money,
    parse_gift_card,
    parse_order,
    parse_transaction,
)
from app.clients.shopify.tokens import (
    AccessTokens,
    ClientCredentialsTokens,
    StaticToken,
)
from app.clients.shopify.webhooks import ShopifyWebhooks
from app.db.tokens import TokenStore
from app.settings import Settings

PAGE_SIZE = 50
# What the built-in simulator accepts when no real token is configured (sandbox mode only).
SANDBOX_ACCESS_TOKEN = "shpat_sandbox_token"  # noqa: S105
# How far back a lost credit/debit is searched for among the card's newest transactions.
RECOVERY_TRANSACTION_PAGES = 4


def _search_term(value: str) -> str:
    """A search value quoted for Shopify's query syntax."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class ShopifyClient(ShopifyBulkExport, ShopifyWebhooks):
    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        token_store: TokenStore | None = None,
    ) -> ShopifyClient:
        """SHOPIFY_ADMIN_TOKEN when set (a legacy admin-created app); otherwise tokens by the
        client credentials grant from SHOPIFY_CLIENT_ID and SHOPIFY_API_SECRET, kept in
        `token_store` (the database, so replicas share them; None: this process only)."""
        return cls(
            settings.shopify_url,
            access_tokens(settings, transport=transport, token_store=token_store),
            settings.shopify_api_version,
            transport=transport,
            currency=settings.currency,
        )

    async def check_access(self) -> None:
        """One cheap authenticated read: raises ShopifyAuthError when the token is refused,
        and leaves `answered_version` set from the answer."""
        await self._query("ShopCheck", {})

    # --- gift card writes -----------------------------------------------------------------

    async def create_gift_card(
        self,
        initial_value: Decimal,
        *,
        code: str | None = None,
        note: str | None = None,
        customer_id: str | None = None,
        expires_on: date | None = None,
        currency: str | None = None,
    ) -> CreatedGiftCard:
        """A new card worth `initial_value` in `currency` (default: the shop's, CURRENCY)."""
        # `initialValue` is deprecated since 2026-07 for `initialAmount` (MoneyInput).
        card_input: dict[str, Any] = {
            "initialAmount": {
                "amount": decimal_text(initial_value),
                "currencyCode": (currency or self.currency).strip().upper(),
            }
        }
        if code is not None:
            card_input["code"] = code
        if note is not None:
            card_input["note"] = note
        if customer_id is not None:
            card_input["customerId"] = customer_id
        if expires_on is not None:
            card_input["expiresOn"] = expires_on.isoformat()
        reference = f"giftCardCreate:{masked_code(code)}" if code else "giftCardCreate"
        lost_before = False

        def created(data: dict[str, Any]) -> CreatedGiftCard:
            payload = data["giftCardCreate"]
            try:
                raise_user_errors(payload["userErrors"], secret=code)
            except ShopifyCodeTaken:
                if not (lost_before and code):
                    raise
                # The lost first attempt may have made it; search can lag behind a create.
                raise AnswerLost("code taken after a lost create") from None
            card = parse_gift_card(payload["giftCard"])
            full_code = payload.get("giftCardCode") or code
            if not full_code:
                raise ShopifyUnknownOutcome(
                    "Shopify created a gift card but sent no code", reference=reference
                )
            self._log.info("shopify_gift_card_created", card_id=card.id, last4=card.last_characters)
            return CreatedGiftCard(card=card, code=str(full_code))

        async def by_code() -> CreatedGiftCard | None:
            nonlocal lost_before
            lost_before = True
            assert code is not None
            return await self._created_by_code(code, initial_value)

        # Without a code nothing can find the card again: a lost answer is an unknown outcome.
        return await self._write(
            "GiftCardCreate",
            {"input": card_input},
            created,
            reference=reference,
            look_up=by_code if code else None,
        )

    async def _created_by_code(self, code: str, initial_value: Decimal) -> CreatedGiftCard | None:
        card = await self.find_gift_card_by_code(code)
        if card is None:
            return None
        if card.initial_value != initial_value:
            raise ShopifyCodeTaken(
                f"gift card code {masked_code(code)} belongs to another card", code="TAKEN"
            )
        self._log.info("shopify_lost_create_recovered", card_id=card.id, last4=card.last_characters)
        return CreatedGiftCard(card=card, code=code)

    async def credit_gift_card(
        self,
        card_id: str,
        amount: Decimal,
        currency: str,
        *,
        idempotency_key: str,
        note: str | None = None,
    ) -> GiftCardMove:
        return await self._move("credit", card_id, amount, currency, idempotency_key, note)

    async def debit_gift_card(
        self,
        card_id: str,
        amount: Decimal,
        currency: str,
        *,
        idempotency_key: str,
        note: str | None = None,
    ) -> GiftCardMove:
        return await self._move("debit", card_id, amount, currency, idempotency_key, note)

    async def _move(
        self,
        kind: str,
        card_id: str,
        amount: Decimal,
        currency: str,
        idempotency_key: str,
        note: str | None,
    ) -> GiftCardMove:
        name = f"giftCard{kind.capitalize()}"
        variables = {
            "id": card_id,
            f"{kind}Input": {
                f"{kind}Amount": {"amount": decimal_text(amount), "currencyCode": currency},
                "note": idempotency_note(idempotency_key, note),
            },
        }

        def moved(data: dict[str, Any]) -> GiftCardMove:
            payload = data[name]
            raise_user_errors(payload["userErrors"])
            transaction = payload[f"{name}Transaction"]
            value, _ = money(transaction["amount"])
            balance, _ = money(transaction["giftCard"]["balance"])
            return GiftCardMove(
                transaction_id=str(transaction["id"]), amount=abs(value), balance_after=balance
            )

        return await self._write(
            "GiftCardCredit" if kind == "credit" else "GiftCardDebit",
            variables,
            moved,
            reference=idempotency_note(idempotency_key, note),
            look_up=lambda: self._find_move(card_id, idempotency_key),
            # A credit or debit has no server-side idempotency (the key is only a note), and a
            # request whose answer timed out may still be applied after the look-up: not yet
            # found proves nothing, so it is never sent again here; the caller settles it later.
            absence_is_proof=False,
        )

    async def _find_move(self, card_id: str, idempotency_key: str) -> GiftCardMove | None:
        async for transaction in self._iter_transactions(card_id, RECOVERY_TRANSACTION_PAGES):
            if transaction.idempotency_key == idempotency_key:
                self._log.info("shopify_lost_move_recovered", card_id=card_id, txn=transaction.id)
                return GiftCardMove(
                    transaction_id=transaction.id,
                    amount=abs(transaction.amount),
                    balance_after=None,
                )
        return None

    async def list_gift_card_transactions(
        self, card_id: str, *, max_pages: int | None = 1
    ) -> list[GiftCardTransaction]:
        """The card's credits and debits, newest first (`max_pages=None`: all of them)."""
        return [t async for t in self._iter_transactions(card_id, max_pages)]

    async def _iter_transactions(
        self, card_id: str, max_pages: int | None
    ) -> AsyncIterator[GiftCardTransaction]:
        after: str | None = None
        pages = itertools.count() if max_pages is None else range(max_pages)
        for _ in pages:
            data = await self._query(
                "GiftCardTransactions", {"id": card_id, "first": 25, "after": after}
            )
            card = data.get("giftCard")
            if card is None:
                raise ShopifyNotFound(f"gift card {card_id} not found", code="GIFT_CARD_NOT_FOUND")
            connection = card.get("transactions") or {"nodes": [], "pageInfo": {}}
            for node in connection["nodes"]:
                yield parse_transaction(node)
            page = connection.get("pageInfo") or {}
            if not page.get("hasNextPage"):
                return
            after = page.get("endCursor")

    async def deactivate_gift_card(self, card_id: str) -> ShopifyGiftCard:
        # Deactivating twice leaves the card as once: safe to repeat after a lost answer.
        data = await self._query("GiftCardDeactivate", {"id": card_id})
        return _card_from_payload(data["giftCardDeactivate"], card_id)

    async def update_gift_card(
        self,
        card_id: str,
        *,
        note: str | None = None,
        customer_id: str | None = None,
        expires_on: date | None = None,
    ) -> ShopifyGiftCard:
        update: dict[str, Any] = {}
        if note is not None:
            update["note"] = note
        if customer_id is not None:
            update["customerId"] = customer_id
        if expires_on is not None:
            update["expiresOn"] = expires_on.isoformat()
        if not update:
            raise ValueError("update_gift_card needs at least one field to change")
        data = await self._query("GiftCardUpdate", {"id": card_id, "input": update})
        return _card_from_payload(data["giftCardUpdate"], card_id)

    async def send_gift_card_notification(self, card_id: str) -> None:
        # A repeat after a lost answer at worst sends the email twice, which beats none.
        data = await self._query("GiftCardSendNotification", {"id": card_id})
        raise_user_errors(data["giftCardSendNotificationToCustomer"]["userErrors"])

    # --- gift card reads ------------------------------------------------------------------

    async def get_gift_card(self, card_id: str) -> ShopifyGiftCard | None:
        data = await self._query("GiftCardGet", {"id": gid("GiftCard", card_id)})
        node = data.get("giftCard")
        return parse_gift_card(node) if node else None

    async def _search_page(
        self,
        query: str | None,
        after: str | None,
        *,
        first: int = PAGE_SIZE,
        sort_key: str | None = None,
        reverse: bool = False,
    ) -> tuple[list[ShopifyGiftCard], str | None]:
        """One page of `giftCards`; the cursor is None when there is no next page."""
        variables: dict[str, Any] = {"first": first, "after": after, "query": query}
        if sort_key is not None:
            variables["sortKey"] = sort_key
            variables["reverse"] = reverse
        data = await self._query("GiftCardsSearch", variables)
        connection = data["giftCards"]
        cards = [parse_gift_card(node) for node in connection["nodes"]]
        page = connection.get("pageInfo") or {}
        return cards, (page.get("endCursor") if page.get("hasNextPage") else None)

    async def find_gift_card_by_code(self, code: str) -> ShopifyGiftCard | None:
        """The card with this full code; Shopify searches codes by the default search term."""
        wanted = code.strip()
        if not wanted:
            return None
        cards, _ = await self._search_page(_search_term(wanted), None, first=5)
        suffix = wanted[-4:].lower()
        matches = [card for card in cards if card.last_characters.lower() == suffix]
        return matches[0] if matches else None

    async def find_gift_cards_by_last_characters(
        self, last_characters: str, *, max_pages: int = 5
    ) -> list[ShopifyGiftCard]:
        wanted = last_characters.strip().lower()
        found: list[ShopifyGiftCard] = []
        after: str | None = None
        for _ in range(max_pages):
            cards, after = await self._search_page(_search_term(wanted), after)
            found.extend(card for card in cards if card.last_characters.lower() == wanted)
            if after is None:
                break
        return found

    async def iter_gift_cards_updated_since(
        self, since: datetime, *, query: str | None = None
    ) -> AsyncIterator[ShopifyGiftCard]:
        """Cards updated at or after `since`, newest first.

        There is no updated_at search filter, so pages are sorted by UPDATED_AT descending and
        reading stops at the first card older than `since`.
        """
        after: str | None = None
        while True:
            cards, after = await self._search_page(
                query, after, sort_key="UPDATED_AT", reverse=True
            )
            for card in cards:
                if card.updated_at < since:
                    return
                yield card
            if after is None:
                return

    # --- customers ------------------------------------------------------------------------

    async def find_customer_by_email(self, email: str) -> str | None:
        wanted = email.strip().lower()
        data = await self._query(
            "CustomersByEmail", {"first": 5, "query": f"email:{_search_term(wanted)}"}
        )
        for node in data["customers"]["nodes"]:
            address = (node.get("defaultEmailAddress") or {}).get("emailAddress")
            if str(address or "").lower() == wanted:
                return str(node["id"])
        return None

    async def find_or_create_customer(
        self, email: str, *, first_name: str | None = None, last_name: str | None = None
    ) -> str:
        existing = await self.find_customer_by_email(email)
        if existing is not None:
            return existing
        customer_input: dict[str, Any] = {"email": email.strip()}
        if first_name:
            customer_input["firstName"] = first_name
        if last_name:
            customer_input["lastName"] = last_name

        def created(data: dict[str, Any]) -> str:
            payload = data["customerCreate"]
            raise_user_errors(payload["userErrors"])
            return str(payload["customer"]["id"])

        try:
            return await self._write(
                "CustomerCreate",
                {"input": customer_input},
                created,
                reference="customerCreate",
                look_up=lambda: self.find_customer_by_email(email),
            )
        except ShopifyCodeTaken:
            # Created meanwhile by someone else (or by our own lost attempt).
            found = await self.find_customer_by_email(email)
            if found is None:
                raise
            return found

    # --- orders ---------------------------------------------------------------------------

    async def get_order(self, order_id: str | int) -> ShopifyOrder | None:
        data = await self._query(
            "OrderGet",
            {"id": gid("Order", order_id), "transactionsFirst": 50, "lineItemsFirst": 100},
        )
        node = data.get("order")
        return parse_order(node) if node else None


def access_tokens(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    token_store: TokenStore | None = None,
) -> AccessTokens:
    """The token source the settings describe (DESIGN 4)."""
    if settings.shopify_admin_token is not None:
        return StaticToken(settings.shopify_admin_token.get_secret_value())
    if settings.shopify_client_id and settings.shopify_api_secret is not None:
        return ClientCredentialsTokens(
            settings.shopify_url,
            settings.shopify_client_id,
            settings.shopify_api_secret.get_secret_value(),
            store=token_store,
            transport=transport,
        )
    if settings.sandbox_enabled:
        return StaticToken(SANDBOX_ACCESS_TOKEN)
    raise ValueError(
        "Shopify: set SHOPIFY_CLIENT_ID and SHOPIFY_API_SECRET (or SHOPIFY_ADMIN_TOKEN)"
    )


def _card_from_payload(payload: dict[str, Any], card_id: str) -> ShopifyGiftCard:
    raise_user_errors(payload["userErrors"])
    if payload.get("giftCard") is None:
        raise ShopifyNotFound(f"gift card {card_id} not found", code="GIFT_CARD_NOT_FOUND")
    return parse_gift_card(payload["giftCard"])
