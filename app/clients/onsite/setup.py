"""The OnSite set-up giftsync's invoices name, read back from the merchant's server.

giftsync writes each balance move as an invoice with a line of the gift card product
(`ONSITE_GIFT_CARD_PRODUCT_CODE`) and a payment of the merchant's method (`ONSITE_PAYMENT_METHOD`),
and follows invoices with `filter=datetime_modified > "..."`. Each is checked here: the product
by `filter=code == "..."` (the OnSite connector's own query: CONFIRMED), the filter by asking
for one invoice with it, the payment method at `/api/payment_methods/` (no source shows that
resource: when the server has none the check can only be a warning).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from app.clients.onsite.errors import OnSiteError, OnSiteUnavailable
from app.clients.onsite.wire import (
    FILTER_PARAM,
    INVOICES_PATH,
    MODIFIED_FILTER,
    PAYMENT_METHODS_PATH,
    PRODUCT_FILTER,
    PRODUCT_TAG,
    PRODUCTS_PATH,
    filter_time,
    named,
    quote,
)
from app.clients.setup_checks import SETUP_TTL_S, SetupCheck, check

Reader = Callable[[str, dict[str, str | int]], Awaitable[Element | None]]


class OnSiteSetupError(OnSiteUnavailable):
    """A write was not sent: the set-up it would name fails a check (see `/readyz`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=SETUP_TTL_S)


async def read_checks(read: Reader, product_code: str, payment_method: str) -> list[SetupCheck]:
    setting = "ONSITE_GIFT_CARD_PRODUCT_CODE"
    products = await read(
        PRODUCTS_PATH, {FILTER_PARAM: PRODUCT_FILTER.format(code=quote(product_code))}
    )
    codes = named(products, PRODUCT_TAG, ("code",)) if products is not None else []
    found = any(code.casefold() == product_code.casefold() for code in codes)
    checks = [
        check(
            "onsite_gift_card_product",
            found,
            f"product {product_code}" if found else f"no product with code {product_code}",
            setting=setting,
            value=product_code,
        )
    ]
    checks.append(await _payment_method(read, payment_method))
    try:
        since = filter_time(datetime.now(UTC))
        await read(INVOICES_PATH, {"count": 1, FILTER_PARAM: MODIFIED_FILTER.format(since=since)})
        checks.append(check("onsite_modified_filter", True, "invoices filter on datetime_modified"))
    except OnSiteError as exc:
        detail = f'the server refuses filter=datetime_modified > "..." ({exc.code})'
        checks.append(check("onsite_modified_filter", False, detail))
    return checks


async def _payment_method(read: Reader, payment_method: str) -> SetupCheck:
    setting = "ONSITE_PAYMENT_METHOD"
    listed = await read(PAYMENT_METHODS_PATH, {})
    if listed is None:
        return check(
            "onsite_payment_method",
            False,
            "the server lists no payment methods to check against: the first invoice will tell",
            setting=setting,
            value=payment_method,
            severity="warning",
        )
    names = named(listed, "payment_method", ("name", "method", "description"))
    found = payment_method in names
    detail = (
        f"payment method {payment_method}" if found else f"no payment method {payment_method!r}"
    )
    return check("onsite_payment_method", found, detail, setting=setting, value=payment_method)
