"""PIN attempt limits of DESIGN 1.B, counted atomically with each attempt.

Every check of a secret (a PIN sent to Vii, a PIN or apply token compared with the stored one)
is an attempt. It is recorded as a failure before the check and forgotten when the secret was
right, in a transaction that first counts under the card's and the client's locks: so a burst
of parallel guesses is counted as it starts and can never pass the limits.
- 5 failures per card in 15 minutes: 429 `too_many_attempts`;
- 10 per card in 24 hours: 423 `card_locked`, until an operator clears it;
- 20 per client in 15 minutes: 429 `too_many_attempts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import pin_attempts
from app.logging import get_logger
from app.sync.shadow.errors import CardLocked, TooManyAttempts

log = get_logger(__name__)

CARD_SHORT_LIMIT = 5
CARD_DAY_LIMIT = 10
CLIENT_SHORT_LIMIT = 20
SHORT_WINDOW = timedelta(minutes=15)
DAY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Attempt:
    attempt_id: int
    vii_hash: str
    vii_last4: str
    client: str


def _retry_after(oldest: datetime | None, now: datetime) -> int:
    if oldest is None:
        return int(SHORT_WINDOW.total_seconds())
    return max(1, int((oldest + SHORT_WINDOW - now).total_seconds()) + 1)


async def begin(session: AsyncSession, vii_hash: str, vii_last4: str, client: str) -> Attempt:
    """`reserve` in a transaction of its own."""
    async with session.begin():
        return await reserve(session, vii_hash, vii_last4, client)


async def reserve(session: AsyncSession, vii_hash: str, vii_last4: str, client: str) -> Attempt:
    """In the caller's transaction: refuse a card or client over its limits, else count this
    attempt as a failure for now (`forget` it once the secret proved right)."""
    seen = await pin_attempts.counts(session, vii_hash, client, short=SHORT_WINDOW, day=DAY_WINDOW)
    if seen.locked or seen.card_day >= CARD_DAY_LIMIT:
        raise CardLocked("This card is locked after too many wrong PINs; ask the shop.")
    if seen.card_short >= CARD_SHORT_LIMIT:
        raise TooManyAttempts(
            "Too many wrong PINs for this card; try again later.",
            retry_after=_retry_after(seen.card_short_oldest, seen.now),
        )
    if seen.client_short >= CLIENT_SHORT_LIMIT:
        raise TooManyAttempts(
            "Too many wrong PINs; try again later.",
            retry_after=_retry_after(seen.client_short_oldest, seen.now),
        )
    attempt_id = await pin_attempts.insert_attempt(session, vii_hash, client)
    return Attempt(attempt_id, vii_hash, vii_last4, client)


async def succeeded(session: AsyncSession, attempt: Attempt) -> None:
    """The secret was right, or it was never checked (the upstream failed): not a failure."""
    async with session.begin():
        await forget(session, attempt)


async def forget(session: AsyncSession, attempt: Attempt) -> None:
    """`succeeded`, in the caller's transaction."""
    await pin_attempts.forget_attempt(session, attempt.attempt_id)


async def failed(session: AsyncSession, attempt: Attempt) -> None:
    """The failure stays counted; reaching a limit is a security event, and a lockout at 10."""
    async with session.begin():
        day = await pin_attempts.failures_in(session, attempt.vii_hash, DAY_WINDOW)
        short = await pin_attempts.failures_in(session, attempt.vii_hash, SHORT_WINDOW)
        if day >= CARD_DAY_LIMIT and await pin_attempts.lock_out(
            session, attempt.vii_hash, attempt.vii_last4
        ):
            log.warning(
                "security_event",
                event_kind="card_locked",
                vii_last4=attempt.vii_last4,
                client=attempt.client,
                failures_24h=day,
            )
        elif short == CARD_SHORT_LIMIT:
            log.warning(
                "security_event",
                event_kind="card_rate_limited",
                vii_last4=attempt.vii_last4,
                client=attempt.client,
                failures_15m=short,
            )


async def clear_lockout(session: AsyncSession, vii_hash: str, operator: str) -> bool:
    """An operator unlocks the card and its failures are forgotten; True if there was any."""
    async with session.begin():
        cleared = await pin_attempts.clear(session, vii_hash, operator)
    log.warning("security_event", event_kind="card_lockout_cleared", operator=operator)
    return cleared
