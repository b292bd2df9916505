"""Crash safety: a worker process is SIGKILLed in the middle of its work, a fresh one takes over,
and nothing is lost or applied twice.

Each test kills the worker at the most dangerous moment there is: an upstream has applied a
write (Shopify's lost-answer fault: applied, then never answered) that the worker has not yet
recorded, while more work is still queued behind it.

- Mid POS import: cards sold in store are being imported to Shopify one by one (Lightspeed is
  slow, so the import takes seconds) and the Shopify card for the next one has just been
  created. The next worker adopts that card rather than making another, and links every card
  with exactly one Shopify card at the POS balance.
- Mid mirroring: spends in store are being mirrored to Shopify as move jobs (Shopify is slow,
  so several are in flight) and one debit has landed unanswered. The killed worker's claimed
  jobs become claimable again (see `expire_leases`), and the next worker lands every spend
  exactly once.

The helpers these use (`Processes.start_worker`, `Proc.kill`, `expire_leases`, `wait_until`)
live in `tests/scale/processes.py` for further crash tests (backfill, reconcile).
"""

from __future__ import annotations

import secrets
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.scale.processes import (
    Processes,
    Simulators,
    expire_leases,
    giftsync_env,
    money,
    wait_until,
)


async def linked(engine: AsyncEngine, pos_ids: list[str]) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM card_links "
                "WHERE system = 'lightspeed' AND external_id = ANY(:ids)"
            ),
            {"ids": pos_ids},
        )
    return int(count or 0)


async def _at_least(engine: AsyncEngine, ids: list[str], count: int) -> bool:
    return await linked(engine, ids) >= count


async def omni_jobs(engine: AsyncEngine) -> dict[str, int]:
    """state -> how many omni jobs are in it."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT state, count(*) FROM jobs WHERE kind LIKE 'omni.%' GROUP BY state")
        )
        return {row[0]: int(row[1]) for row in rows}


async def shopify_by_code(sims: Simulators, codes: set[str]) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {code: [] for code in codes}
    for card in await sims.shopify_cards():
        if card["code"] in found:
            found[card["code"]].append(card)
    return found


async def assert_ledger_keys_unique(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        repeated = (
            await connection.execute(
                text(
                    "SELECT idempotency_key FROM ledger GROUP BY idempotency_key "
                    "HAVING count(*) > 1"
                )
            )
        ).all()
    assert repeated == []


async def sell_cards(sims: Simulators, count: int) -> dict[str, tuple[str, str]]:
    """POS id -> (code, amount) for `count` cards sold in store."""
    tag = secrets.token_hex(3)
    sold: dict[str, tuple[str, str]] = {}
    for n in range(count):
        code, amount = f"cr{tag}{n:04d}", f"{10 + n}.{n % 100:02d}"
        sold[await sims.sell_in_store(code, amount)] = (code, amount)
    return sold


async def test_worker_killed_mid_pos_import_loses_no_card_and_makes_none_twice(
    processes: Processes, engine: AsyncEngine, database_url: str
) -> None:
    sims = await processes.start_simulators()
    env = giftsync_env(database_url, sims)
    sold = await sell_cards(sims, 30)
    ids = list(sold)
    # Each card costs a Lightspeed read before its Shopify create: the import takes seconds.
    await sims.set_faults("lightspeed", latency_ms=150)

    first = await processes.start_worker(env)
    await wait_until(
        lambda: _at_least(engine, ids, 3),
        within=60,
        what="the first cards are imported",
        processes=processes,
    )
    codes = {code for code, _ in sold.values()}
    await sims.set_faults("shopify", lose_answer_rate=1.0, lost_answer_hang_s=3)

    async def created_unrecorded() -> bool:
        made = sum(len(cards) for cards in (await shopify_by_code(sims, codes)).values())
        return made > await linked(engine, ids)

    await wait_until(
        created_unrecorded,
        within=30,
        what="a Shopify card is created whose answer is lost",
        processes=processes,
    )
    first.kill()
    at_kill = await linked(engine, ids)
    made_at_kill = sum(len(cards) for cards in (await shopify_by_code(sims, codes)).values())
    assert 0 < at_kill < len(ids), "the worker must die with the import half done"
    assert made_at_kill == at_kill + 1, "one Shopify card exists that giftsync has not recorded"
    await expire_leases(engine, first)

    await sims.set_faults("shopify", lose_answer_rate=0.0)
    await sims.set_faults("lightspeed", latency_ms=0)
    await processes.start_worker(env)

    async def all_imported() -> bool:
        return await linked(engine, ids) == len(ids) and set(await omni_jobs(engine)) <= {"done"}

    await wait_until(all_imported, within=60, what="every card is imported", processes=processes)

    shopify = await shopify_by_code(sims, codes)
    for code, amount in sold.values():
        assert [money(str(card["balance"])) for card in shopify[code]] == [money(amount)], code
    async with engine.connect() as connection:
        per_card = (
            await connection.execute(
                text(
                    """
                    SELECT count(*) FILTER (WHERE system = 'shopify'),
                           count(*) FILTER (WHERE system = 'lightspeed')
                    FROM card_links GROUP BY card_id
                    """
                )
            )
        ).all()
        bases = await connection.scalar(text("SELECT sum(balance_minor) FROM sync_base"))
        findings = await connection.scalar(text("SELECT count(*) FROM findings"))
    assert len(per_card) == len(ids) and set(per_card) == {(1, 1)}
    assert findings == 0
    assert bases == sum(int(money(amount) * 100) for _, amount in sold.values())
    await assert_ledger_keys_unique(engine)


async def test_worker_killed_mid_mirroring_lands_every_spend_exactly_once(
    processes: Processes, engine: AsyncEngine, database_url: str
) -> None:
    sims = await processes.start_simulators()
    env = giftsync_env(database_url, sims)
    sold = await sell_cards(sims, 12)
    ids = list(sold)
    first = await processes.start_worker(env)

    async def all_imported() -> bool:
        return await linked(engine, ids) == len(ids)

    await wait_until(all_imported, within=60, what="every card is imported", processes=processes)

    # Slow Shopify: every merge reads the card there and every move writes it, so moves are
    # still queued and in flight when the worker dies.
    await sims.set_faults("shopify", latency_ms=300)
    spends = {card_id: f"{1 + n}.{(7 * n) % 100:02d}" for n, card_id in enumerate(ids)}
    for card_id, amount in spends.items():
        await sims.spend_in_store(card_id, amount)

    async def moves_under_way() -> bool:
        return await _moves_done(engine) >= 2

    await wait_until(
        moves_under_way, within=60, what="moves are being applied", processes=processes
    )
    codes = {code for code, _ in sold.values()}
    await sims.set_faults("shopify", lose_answer_rate=1.0, lost_answer_hang_s=3)

    async def debited_unrecorded() -> bool:
        shopify = await shopify_by_code(sims, codes)
        debits = sum(
            1
            for cards in shopify.values()
            for card in cards
            for t in _transactions(card)
            if t["kind"] == "debit"
        )
        return debits > await _moves_done(engine)

    await wait_until(
        debited_unrecorded,
        within=30,
        what="a debit lands on Shopify whose answer is lost",
        processes=processes,
    )
    first.kill()
    assert await _moves_done(engine) < len(ids), "the worker must die with spends not yet mirrored"
    assert await expire_leases(engine, first) >= 1

    await sims.set_faults("shopify", latency_ms=0, lose_answer_rate=0.0)
    await processes.start_worker(env)

    async def all_mirrored() -> bool:
        if set(await omni_jobs(engine)) - {"done"}:
            return False
        pos = await sims.pos_cards()
        shopify = await shopify_by_code(sims, codes)
        return all(
            len(shopify[code]) == 1
            and money(str(shopify[code][0]["balance"])) == money(pos[card_id]["money"])
            for card_id, (code, _) in sold.items()
        )

    await wait_until(
        all_mirrored, within=60, what="every spend reaches Shopify", processes=processes
    )

    shopify = await shopify_by_code(sims, codes)
    for card_id, (code, amount) in sold.items():
        (card,) = shopify[code]
        assert money(str(card["balance"])) == money(amount) - money(spends[card_id]), code
        debits = [money(t["amount"]) for t in _transactions(card) if t["kind"] == "debit"]
        assert debits == [-money(spends[card_id])], code
    async with engine.connect() as connection:
        moves = (
            await connection.execute(
                text(
                    "SELECT payload->>'external_id', state FROM jobs WHERE kind = 'omni.move' "
                    "AND payload->>'system' = 'shopify'"
                )
            )
        ).all()
        merged = await connection.scalar(
            text(
                "SELECT sum(amount_minor) FROM ledger WHERE cause = 'merge' AND system = 'shopify'"
            )
        )
    assert len(moves) == len(ids) and {state for _, state in moves} == {"done"}
    assert len({external_id for external_id, _ in moves}) == len(ids)
    assert merged == -sum(int(Decimal(amount) * 100) for amount in spends.values())
    await assert_ledger_keys_unique(engine)


def _transactions(card: dict[str, object]) -> list[dict[str, str]]:
    transactions = card["transactions"]
    assert isinstance(transactions, list)
    return transactions


async def _moves_done(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM jobs WHERE kind = 'omni.move' AND state = 'done'")
        )
    return int(count or 0)
