"""Lightspeed Retail (R-Series) API V3: gift cards (credit accounts) and their balance moves.

Thin by design: one method per upstream operation, over `wire` (OAuth, pacing for both rate
limiters, delivery, paging). `setup` judges the shop, register, employee and payment type every
sale names, and writes are refused before sending while one of its `error` checks fails;
`sales` holds the documented sale shapes, `models` the string-typed wire format.

Incremental reads filter `timeStamp` with `>=` on whole seconds (query-parameters.md): several
changes can share one second, so the second already seen is read again and the overlap is
de-duplicated by id. Gift card balance moves are followed on Sale (whose `timeStamp` is the
completion time), since no page says a sale changes its card's `timeStamp`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

import app.clients.lightspeed.sales as sales
from app.clients.lightspeed.errors import LightspeedError, LightspeedUnavailable
from app.clients.lightspeed.models import (
    LsCustomer,
    LsGiftCard,
    LsGiftCardPayment,
    as_bool,
    as_list,
    cursor_text,
    parse_customer,
    parse_gift_card,
)
from app.clients.lightspeed.pacing import Clock, Interval, Sleep, query_relations_cost, sale_cost
from app.clients.lightspeed.setup import (
    GIFT_CARD_SCOPE,
    LightspeedSetupError,
    SaleSetup,
    codes_check,
    probe_codes,
    read_checks,
)
from app.clients.lightspeed.wire import LightspeedWire
from app.clients.setup_checks import SetupCheck, SetupGate
from app.db.tokens import TokenStore
from app.logging import get_logger
from app.settings import BalanceSign, Settings

log = get_logger(__name__)

# How far before our own send a lost sale is looked for: clocks differ, and the server stamps
# the sale when it completes it.
LOOKUP_MARGIN = timedelta(minutes=5)


class LightspeedClient(LightspeedWire):
    # 5% over the documented 1 request/s, because the server times arrivals, not departures.
    CODE_LOOKUP_INTERVAL_S = 1.05

    def __init__(
        self,
        account_id: str,
        client_id: str,
        client_secret: str,
        token_store: TokenStore,
        *,
        initial_refresh_token: str | None,
        base_url: str,
        token_url: str,
        balance_sign: BalanceSign,
        sale_setup: SaleSetup | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.time,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(
            account_id,
            client_id,
            client_secret,
            token_store,
            initial_refresh_token=initial_refresh_token,
            base_url=base_url,
            token_url=token_url,
            timeout=timeout,
            transport=transport,
            clock=clock,
            sleep=sleep,
        )
        self._balance_sign = balance_sign
        self._code_lookups = Interval(self.CODE_LOOKUP_INTERVAL_S, self._sleep_hook, clock)
        self.sale_setup = sale_setup or SaleSetup()
        self.codes_masked: bool | None = None
        """What the last gift card read showed: masked codes (None: none read yet)."""
        self.setup = SetupGate(
            self._read_setup,
            LightspeedSetupError,
            live=lambda: [codes_check(self.codes_masked)],
            clock=clock,
        )
        self._gift_type_id: str | None = None
        self._gift_type_lock = asyncio.Lock()
        self._card_time_filter = True

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        token_store: TokenStore,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> LightspeedClient:
        secret = settings.lightspeed_client_secret
        refresh = settings.lightspeed_refresh_token
        return cls(
            account_id=settings.lightspeed_account_id or "",
            client_id=settings.lightspeed_client_id or "",
            client_secret=secret.get_secret_value() if secret else "",
            token_store=token_store,
            initial_refresh_token=refresh.get_secret_value() if refresh else None,
            base_url=settings.lightspeed_base_url,
            token_url=settings.lightspeed_token_url,
            balance_sign=settings.lightspeed_balance_sign,
            sale_setup=SaleSetup(
                shop_id=settings.lightspeed_shop_id,
                register_id=settings.lightspeed_register_id,
                employee_id=settings.lightspeed_employee_id,
                payment_type_id=settings.lightspeed_payment_type_id,
            ),
            transport=transport,
        )

    # ---- set-up ----

    async def setup_checks(self, *, fresh: bool = False) -> list[SetupCheck]:
        """The set-up read back from the account (cached a minute unless `fresh`)."""
        return await self.setup.checks(fresh=fresh)

    async def _read_setup(self) -> list[SetupCheck]:
        async def read(path: str, params: dict[str, str] | None) -> dict[str, Any] | None:
            return await self._read("GET", path, params=params, not_found=True)

        checks = await read_checks(read, self.sale_setup)
        if self.codes_masked is None:
            self.codes_masked = await probe_codes(read)
        return checks

    # ---- gift cards ----

    def _card(self, item: Mapping[str, Any], *, sent_code: str | None = None) -> LsGiftCard:
        card = parse_gift_card(item, self._balance_sign)
        self.codes_masked = card.code_masked
        if sent_code is not None:
            # The create answer masks the code too (gift-cards.md); we know what we sent.
            return replace(card, code=sent_code)
        if card.code_masked:
            raise LightspeedSetupError(
                f"Lightspeed gift card codes come back masked: grant the scope {GIFT_CARD_SCOPE}"
            )
        return card

    async def iter_gift_cards(
        self, *, since: datetime | None = None, include_archived: bool = False
    ) -> AsyncIterator[LsGiftCard]:
        """Gift cards (creditaccount.md: listed only with `giftCard=true`); with `since`,
        those whose `timeStamp` is at or after its second. If the account refuses a timeStamp
        range on CreditAccount ("only the equals operator"), nothing is listed for `since`:
        `iter_gift_card_payments` still sees every card a sale moved."""
        params: dict[str, str] = {"giftCard": "true"}
        if include_archived:
            params["archived"] = "true"
        if since is not None:
            if not self._card_time_filter:
                return
            params["timeStamp"] = f">=,{cursor_text(since)}"
            params["sort"] = "timeStamp"
        try:
            async for item in self._paged("CreditAccount", params, "creditAccountID"):
                yield self._card(item)
        except LightspeedError as exc:
            if since is None or exc.code != "bad_request":
                raise
            log.warning("lightspeed_card_time_filter_refused")
            self._card_time_filter = False

    async def get_gift_card(self, credit_account_id: str) -> LsGiftCard | None:
        body = await self._read("GET", f"CreditAccount/{credit_account_id}.json", not_found=True)
        for item in as_list(body.get("CreditAccount") if body else None):
            if as_bool(item.get("giftCard")):
                return self._card(item)
        return None

    async def get_gift_card_by_code(self, code: str) -> LsGiftCard | None:
        # gift-cards.md: all three parameters, `=` only, at most 1 look-up a second.
        await self._code_lookups.wait()
        body = await self._read(
            "GET",
            "CreditAccount.json",
            params={"giftCard": "true", "archived": "true", "code": code},
        )
        items = as_list(body.get("CreditAccount")) if body else []
        return self._card(items[0]) if items else None

    async def create_gift_card(
        self,
        code: str,
        *,
        name: str | None = None,
        description: str | None = None,
        customer_id: str | None = None,
    ) -> LsGiftCard:
        """creditaccount.md: the POST takes name, code and customerID and makes a gift card."""
        await self.setup.require()
        return (await self._create_card(code, name, description, customer_id))[0]

    async def _create_card(
        self, code: str, name: str | None, description: str | None, customer_id: str | None
    ) -> tuple[LsGiftCard, bool]:
        """The card, and whether this call made it (False when a look-up found it)."""
        payload: dict[str, Any] = {"code": code}
        for key, value in (("name", name), ("description", description)):
            if value is not None:
                payload[key] = value
        if customer_id is not None:
            payload["customerID"] = customer_id
        made_here = True

        def created(body: dict[str, Any]) -> LsGiftCard:
            return self._card(as_list(body["CreditAccount"])[0], sent_code=code)

        async def look_up() -> LsGiftCard | None:
            nonlocal made_here
            made_here = False
            return await self.get_gift_card_by_code(code)

        # A code is unique per account, so the code itself tells whether it landed.
        card = await self._delivery.write(
            lambda: self._write("POST", "CreditAccount.json", payload, cost=1.0, read=created),
            what="Lightspeed gift card create",
            reference=f"code-last4:{code[-4:]}",
            look_up=look_up,
        )
        return card, made_here

    async def create_loaded_gift_card(
        self,
        code: str,
        amount: Decimal,
        *,
        reference: str,
        name: str | None = None,
        description: str | None = None,
    ) -> LsGiftCard:
        """A new card holding `amount`, in two calls when all goes well: the CreditAccount POST
        (1 unit) and the load sale (6 units), the documented minimum of 7.

        Nothing is looked up for a card this call created: no earlier load can exist. A card
        the code already names (a retry after a crash: the code is giftsync's to choose) is
        read by its code, and its load looked up by `reference` before it is sent.
        """
        await self.setup.require()
        try:
            card, fresh = await self._create_card(code, name, description, None)
        except LightspeedError:
            found = await self.get_gift_card_by_code(code)
            if found is None:
                raise
            card, fresh = found, False
        if amount <= 0:
            return card
        gift_amount = -_positive(amount)
        await self.setup.require()  # the create answer may just have shown masked codes
        payment = await self._move_balance(
            card.credit_account_id, gift_amount, reference, look_up_first=not fresh
        )
        if fresh:
            return replace(card, balance=amount, time_stamp=payment.time_stamp)
        loaded = await self.get_gift_card(card.credit_account_id)
        if loaded is None:
            raise LightspeedUnavailable("Lightspeed lost the gift card it just loaded")
        return loaded

    async def archive_gift_card(self, credit_account_id: str) -> None:
        # creditaccount.md: DELETE archives and keeps the balance; repeating it is harmless,
        # so it may be retried like a read.
        await self.setup.require()
        await self._read("DELETE", f"CreditAccount/{credit_account_id}.json")

    # ---- customers ----

    async def get_customer(self, customer_id: str) -> LsCustomer | None:
        # Contact (where the emails live) is a relation: without load_relations it is absent.
        body = await self._read(
            "GET",
            f"Customer/{customer_id}.json",
            params={"load_relations": json.dumps(["Contact"])},
            not_found=True,
        )
        items = as_list(body.get("Customer")) if body else []
        return parse_customer(items[0]) if items else None

    # ---- balance moves ----

    async def load_gift_card(
        self, credit_account_id: str, amount: Decimal, *, reference: str
    ) -> LsGiftCardPayment:
        await self.setup.require()
        return await self._move_balance(credit_account_id, -_positive(amount), reference)

    async def redeem_gift_card(
        self, credit_account_id: str, amount: Decimal, *, reference: str
    ) -> LsGiftCardPayment:
        await self.setup.require()
        return await self._move_balance(credit_account_id, _positive(amount), reference)

    async def iter_gift_card_payments(self, *, since: datetime) -> AsyncIterator[LsGiftCardPayment]:
        """Gift card payments of sales whose `timeStamp` is at or after `since`'s second, read
        through Sale with its `SalePayments` relation (sale.md; SalePayment has no `Sale`
        relation and no timeStamp field, salepayment.md)."""
        gift_type_id = await self._gift_type()
        params = {
            "timeStamp": f">=,{cursor_text(since)}",
            "sort": "timeStamp",
            "load_relations": sales.SALE_RELATIONS,
        }
        async for sale in self._paged("Sale", params, "saleID", extra_cost=query_relations_cost(1)):
            for payment in sales.card_payments(sale, gift_type_id):
                yield payment

    async def _move_balance(
        self,
        credit_account_id: str,
        gift_amount: Decimal,
        reference: str,
        *,
        look_up_first: bool = True,
    ) -> LsGiftCardPayment:
        """One completed sale (see `sales`): a load when `gift_amount` < 0, else a redemption.

        With `look_up_first` the reference is looked up before sending, so a job retried after
        a crash never applies twice; after a lost answer it is looked up again and the sale
        re-sent at most once.
        """
        gift_type_id = await self._gift_type()
        amount = abs(gift_amount)
        build = sales.load_sale if gift_amount < 0 else sales.redemption_sale
        sale = build(self.sale_setup, gift_type_id, credit_account_id, amount, reference)
        sent_at: datetime | None = None

        def ours(body: dict[str, Any]) -> LsGiftCardPayment:
            found = sales.payment_of(body, gift_type_id, credit_account_id, reference)
            if found is None:
                raise LightspeedUnavailable("Lightspeed answered the sale without our payment")
            return found

        async def send() -> LsGiftCardPayment:
            nonlocal sent_at
            sent_at = sent_at or self._now()
            cost = sale_cost(sales.NESTED_PER_SALE, completed=True)
            return await self._write("POST", "Sale.json", sale, cost=cost, read=ours)

        async def look_up() -> LsGiftCardPayment | None:
            since = sent_at - LOOKUP_MARGIN if sent_at is not None else None
            return await self._find_sale(reference, gift_type_id, credit_account_id, since)

        return await self._delivery.write(
            send,
            what="Lightspeed sale",
            reference=reference,
            look_up=look_up,
            look_up_first=look_up_first,
        )

    async def _find_sale(
        self, reference: str, gift_type_id: str, credit_account_id: str, since: datetime | None
    ) -> LsGiftCardPayment | None:
        """The sale tagged `reference` (its `referenceNumber`, matched here whatever the server
        did with the filter). After a lost answer the window from `since` is read whole; before
        a first send only the newest page is read (a crashed attempt is recent)."""
        params = {"referenceNumber": reference, "load_relations": sales.SALE_RELATIONS}
        if since is not None:
            params.update({"timeStamp": f">=,{cursor_text(since)}", "sort": "timeStamp"})
        else:
            params["sort"] = "-saleID"
        extra = query_relations_cost(1)
        async for sale in self._paged(
            "Sale", params, "saleID", extra_cost=extra, one_page=since is None
        ):
            found = sales.payment_of({"Sale": sale}, gift_type_id, credit_account_id, reference)
            if found is not None and found.completed:
                return found
        return None

    async def _gift_type(self) -> str:
        """The gift card payment type's id (paymenttype.md: type "gift card"; 5 in the docs'
        examples, not promised), looked up once per client."""
        async with self._gift_type_lock:
            if self._gift_type_id is None:
                body = await self._read("GET", "PaymentType.json")
                for item in as_list(body.get("PaymentType") if body else None):
                    if str(item.get("type", "")).strip().lower() == "gift card":
                        self._gift_type_id = str(item["paymentTypeID"])
                        break
                if self._gift_type_id is None:
                    raise LightspeedSetupError("Lightspeed account has no gift card payment type")
            return self._gift_type_id


def _positive(amount: Decimal) -> Decimal:
    if not amount.is_finite() or amount <= 0:
        raise ValueError("amount must be a positive decimal")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError("amount has more than two decimal places")
    return amount
