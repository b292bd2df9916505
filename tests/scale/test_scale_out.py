"""Scale-out: two API processes and two workers on one database, against simulators in a
process of their own. Nothing here is coordinated in memory: only PostgreSQL is shared.

- The same Vii card and checkout posted to both APIs at once: one hold, one Shopify card
  (requests beyond the card's 2 in flight per process are told it is busy).
- Different checkouts on one Vii card from both APIs: never more held than the card holds.
- Both workers polling the POS: one Shopify card and one link per card sold in store; a
  redemption in store mirrored to Shopify exactly once.
- Webhooks delivered to both APIs: stored once, each job run once, by exactly one worker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.scale.conftest import truncate
from tests.scale.processes import (
    SHOPIFY_API_SECRET,
    Api,
    Processes,
    Simulators,
    WorkerProc,
    giftsync_env,
    money,
    wait_until,
)

PIN = "4321"


@dataclass
class Stack:
    procs: Processes
    sims: Simulators
    apis: list[Api]
    workers: list[WorkerProc]


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
    engine: AsyncEngine,
    table_names: list[str],
    database_url: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Stack]:
    """One deployment for the whole module: starting five processes per test would cost more
    than the tests themselves. Each test works on its own cards and deliveries."""
    await truncate(engine, table_names)
    failed_before = request.session.testsfailed
    workdir = Path(tmp_path_factory.mktemp("scale-out"))
    async with Processes(workdir, engine) as procs:
        sims = await procs.start_simulators()
        env = giftsync_env(database_url, sims)
        apis = list(await asyncio.gather(procs.start_api(env), procs.start_api(env)))
        workers = list(await asyncio.gather(procs.start_worker(env), procs.start_worker(env)))
        yield Stack(procs, sims, apis, workers)
        if request.session.testsfailed > failed_before:
            print(procs.describe())


@pytest.fixture(autouse=True)
async def clean_database() -> None:
    """Replaces the suite's TRUNCATE before each test: this module's processes live across its
    tests (pollers' cursors and Lightspeed's rotated token are in the database), so the tables
    are emptied once, by `stack`, before they start."""


async def post_everywhere(
    requests: list[tuple[Api, str, dict[str, Any], dict[str, str]]],
) -> list[httpx.Response]:
    """Send every request at once, each to its API process; answers in request order."""
    clients: dict[str, httpx.AsyncClient] = {}
    for api, _, _, _ in requests:
        if api.url not in clients:
            clients[api.url] = api.client()
    try:
        return list(
            await asyncio.gather(
                *(
                    clients[api.url].post(path, content=json.dumps(body), headers=headers)
                    for api, path, body, headers in requests
                )
            )
        )
    finally:
        for client in clients.values():
            await client.aclose()


JSON = {"content-type": "application/json"}


def cards_ending(cards: list[dict[str, Any]], last4: str) -> list[dict[str, Any]]:
    return [card for card in cards if card["last_characters"] == last4]


def assert_busy(answer: httpx.Response) -> None:
    """A card already used by its 2 admitted requests (per process), or by another process for
    longer than the 2 s wait, answers 429 `busy` (DESIGN 1.B)."""
    assert answer.status_code == 429, answer.text
    assert answer.json()["code"] == "busy"
    assert answer.headers["Retry-After"] == "2"


async def test_one_card_posted_to_both_apis_at_once_gets_one_hold_and_one_shopify_card(
    stack: Stack, engine: AsyncEngine
) -> None:
    number = "6280007700001357"
    await stack.sims.add_vii_card(number, PIN, "50.00")
    body = {
        "viiCardNumber": number,
        "viiCardPin": PIN,
        "cartTotal": "25.00",
        "checkoutToken": "scale-same-checkout",
    }
    answers = await post_everywhere(
        [(api, "/check-balance", body, JSON) for api in stack.apis for _ in range(10)]
    )

    # The first request in makes the card; every other admitted one proves the PIN and
    # re-sizes the same card to the same cart. The rest are told the card is busy.
    served = [a for a in answers if a.status_code == 200]
    assert served, [a.text for a in answers]
    for answer in answers:
        if answer.status_code != 200:
            assert_busy(answer)
    codes = {a.json()["shopifyGiftCardCode"] for a in served}
    assert len(codes) == 1
    assert {a.json()["amountApplied"] for a in served} == {"25.00"}
    # Each proof by PIN hands out a fresh apply token (the caller may have lost its own).
    assert len({a.json()["applyToken"] for a in served}) == len(served)
    vii = await stack.sims.vii_card(number)
    assert list(vii["open_holds"].values()) == ["25.00"]
    assert vii["available"] == "25.00"
    shopify = cards_ending(await stack.sims.shopify_cards(), "1357")
    assert [(c["code"], money(c["balance"])) for c in shopify] == [(codes.pop(), Decimal("25.00"))]
    async with engine.connect() as connection:
        shadows = await connection.scalar(
            text("SELECT count(*) FROM shadow_cards WHERE vii_last4 = '1357'")
        )
    assert shadows == 1


async def test_checkouts_on_one_card_from_both_apis_never_hold_more_than_its_balance(
    stack: Stack,
) -> None:
    number = "6280007700002468"
    await stack.sims.add_vii_card(number, PIN, "50.00")
    requests = [
        (
            stack.apis[n % 2],
            "/check-balance",
            {
                "viiCardNumber": number,
                "viiCardPin": PIN,
                "cartTotal": "30.00",
                "checkoutToken": f"scale-checkout-{n}",
            },
            JSON,
        )
        for n in range(6)
    ]
    answers = await post_everywhere(requests)

    # Served one at a time: the first gets 30.00, the second what is left (20.00), any later
    # one finds the card empty; a request that found the card busy was not served at all.
    applied = sorted(Decimal(a.json()["amountApplied"]) for a in answers if a.status_code == 200)
    empty = [a for a in answers if a.status_code == 402]
    for answer in answers:
        if answer.status_code == 402:
            assert answer.json()["code"] == "card_empty"
        elif answer.status_code != 200:
            assert_busy(answer)
    if empty:
        assert applied == [Decimal("20.00"), Decimal("30.00")], [a.text for a in answers]
    else:
        assert applied in ([Decimal("30.00")], [Decimal("20.00"), Decimal("30.00")]), [
            a.text for a in answers
        ]
    vii = await stack.sims.vii_card(number)
    held = sorted(money(amount) for amount in vii["open_holds"].values())
    assert held == applied
    assert money(vii["available"]) == Decimal("50.00") - sum(applied)
    shopify = cards_ending(await stack.sims.shopify_cards(), "2468")
    assert sorted(money(c["balance"]) for c in shopify) == applied


async def links_of(engine: AsyncEngine, system: str, external_ids: list[str]) -> dict[str, int]:
    """external id -> how many links it has (0 when unlinked)."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT external_id, count(*) FROM card_links "
                "WHERE system = :s AND external_id = ANY(:ids) GROUP BY external_id"
            ),
            {"s": system, "ids": external_ids},
        )
        found = {row[0]: int(row[1]) for row in rows}
    return {external_id: found.get(external_id, 0) for external_id in external_ids}


async def omni_jobs_unfinished(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM jobs WHERE kind LIKE 'omni.%' AND state <> 'done'")
        )
    return int(count or 0)


async def shopify_matches_pos(sims: Simulators, codes: dict[str, str]) -> bool:
    """Every POS card (id -> code) has a Shopify card with its code holding the same money."""
    pos = await sims.pos_cards()
    shopify = {card["code"]: card for card in await sims.shopify_cards()}
    return all(
        code in shopify and money(shopify[code]["balance"]) == money(pos[card_id]["money"])
        for card_id, code in codes.items()
    )


async def test_both_workers_polling_link_each_store_sale_once_and_mirror_each_spend_once(
    stack: Stack, engine: AsyncEngine
) -> None:
    sims = stack.sims
    tag = secrets.token_hex(3)
    sold = {f"sb{tag}{n:04d}": f"{20 + n}.00" for n in range(8)}
    codes = {await sims.sell_in_store(code, amount): code for code, amount in sold.items()}
    ids = list(codes)

    async def all_linked() -> bool:
        links = await links_of(engine, "lightspeed", ids)
        return all(links.values()) and await omni_jobs_unfinished(engine) == 0

    await wait_until(
        all_linked, within=60, what="every store sale is linked", processes=stack.procs
    )
    assert set((await links_of(engine, "lightspeed", ids)).values()) == {1}
    shopify = [card for card in await sims.shopify_cards() if card["code"] in sold]
    assert sorted(card["code"] for card in shopify) == sorted(sold)
    assert {card["code"]: money(card["balance"]) for card in shopify} == {
        code: money(amount) for code, amount in sold.items()
    }
    assert set((await links_of(engine, "shopify", [c["id"] for c in shopify])).values()) == {1}

    spends = {ids[0]: "3.25", ids[3]: "7.10", ids[5]: "0.01"}
    for card_id, amount in spends.items():
        await sims.spend_in_store(card_id, amount)

    async def mirrored() -> bool:
        return await omni_jobs_unfinished(engine) == 0 and await shopify_matches_pos(sims, codes)

    await wait_until(mirrored, within=60, what="the spends reach Shopify", processes=stack.procs)
    # A barrier: once a later spend is mirrored too, the pollers have read the earlier ones
    # again (each poll re-reads an overlap before its cursor), so a repeat would show now.
    await sims.spend_in_store(ids[7], "1.00")
    spends[ids[7]] = "1.00"
    await wait_until(
        mirrored, within=60, what="the last spend reaches Shopify", processes=stack.procs
    )

    by_code = {card["code"]: card for card in await sims.shopify_cards()}
    for card_id, code in codes.items():
        debits = [t for t in by_code[code]["transactions"] if t["kind"] == "debit"]
        expected = [-money(spends[card_id])] if card_id in spends else []
        assert [money(t["amount"]) for t in debits] == expected, code
    async with engine.connect() as connection:
        moves = (
            await connection.execute(
                text(
                    "SELECT payload->>'external_id', attempts, state FROM jobs "
                    "WHERE kind = 'omni.move' AND payload->>'system' = 'shopify' "
                    "AND payload->>'external_id' = ANY(:ids)"
                ),
                {"ids": [by_code[codes[card_id]]["id"] for card_id in ids]},
            )
        ).all()
    assert sorted(row[0] for row in moves) == sorted(
        by_code[codes[card_id]]["id"] for card_id in spends
    )
    assert {(row[1], row[2]) for row in moves} == {(1, "done")}


def signed_delivery(
    webhook_id: str, payload: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    raw = json.dumps(payload).encode()
    digest = hmac.new(SHOPIFY_API_SECRET.encode(), raw, hashlib.sha256).digest()
    headers = {
        "content-type": "application/json",
        "X-Shopify-Topic": "gift_cards/update",
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Shop-Domain": "giftsync-sandbox.myshopify.com",
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
    }
    return payload, headers


async def test_webhooks_posted_to_both_apis_are_each_run_once_by_exactly_one_worker(
    stack: Stack, engine: AsyncEngine
) -> None:
    # `gift_cards/update` for a card giftsync never linked: the handler reads it from Shopify
    # and finds nothing to do. Shopify answers slowly here, so each job takes long enough for
    # both workers to be busy at once.
    await stack.sims.set_faults("shopify", latency_ms=100)
    try:
        tag = secrets.token_hex(4)
        deliveries = [
            signed_delivery(
                f"scale-{tag}-{n}",
                {
                    "id": 990_000_000 + n,
                    "admin_graphql_api_id": f"gid://shopify/GiftCard/{990_000_000 + n}",
                },
            )
            for n in range(40)
        ]
        # Each delivery reaches both replicas at once, as a retry racing the first attempt.
        answers = await post_everywhere(
            [
                (api, "/webhooks/shopify", payload, headers)
                for payload, headers in deliveries
                for api in stack.apis
            ]
        )
        assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
        for n in range(len(deliveries)):
            pair = answers[2 * n : 2 * n + 2]
            assert sorted(a.json()["duplicate"] for a in pair) == [False, True]

        webhook_ids = [headers["X-Shopify-Webhook-Id"] for _, headers in deliveries]

        async def jobs_of_deliveries() -> list[Any]:
            async with engine.connect() as connection:
                return list(
                    (
                        await connection.execute(
                            text(
                                """
                                SELECT j.id, j.state, j.attempts, i.processed_at
                                FROM webhook_inbox i
                                LEFT JOIN jobs j ON j.idempotency_key = 'webhook:' || i.id
                                WHERE i.webhook_id = ANY(:ids)
                                """
                            ),
                            {"ids": webhook_ids},
                        )
                    ).all()
                )

        async def all_processed() -> bool:
            rows = await jobs_of_deliveries()
            done = {job_id for w in stack.workers for job_id in w.jobs_done()}
            return all(row.state == "done" and row.id in done for row in rows)

        await wait_until(
            all_processed, within=60, what="every delivery is processed", processes=stack.procs
        )
    finally:
        await stack.sims.set_faults("shopify", latency_ms=0)

    rows = await jobs_of_deliveries()
    assert len(rows) == len(deliveries)
    assert {(row.state, row.attempts) for row in rows} == {("done", 1)}
    assert all(row.processed_at is not None for row in rows)
    ours = {row.id for row in rows}
    ran = [[job for job in worker.jobs_done() if job in ours] for worker in stack.workers]
    assert sorted(ran[0] + ran[1]) == sorted(ours), "each job finished once, by one worker"
    assert ran[0] and ran[1], "both workers took part"
