"""Secrets never leave their place: PINs, full card numbers, serials and codes.

One realistic run of every flow that handles them (a Vii card applied with its PIN, re-sized,
re-held, paid and captured; failed PINs up to the lockout; a second card through a Vii outage
and a Shopify outage, then released; an omni card sold in store and mirrored both ways through
a POS outage; a card bought online and exported to the POS; operator look-ups), with the app's
own log configuration capturing every line, and then a search of everything the service put
out or kept: every log line (structlog and standard library, uvicorn's access lines included),
every HTTP answer's body and headers, every problem body, `GET /metrics`, and every column of
every table. None may hold a PIN, a full Vii card number, a full POS serial or Shopify code of
an omni card, or an apply token, in clear, in hex or in base64 (a shadow code and its apply
token only in the answer that hands them out). The one place allowed is a ciphertext column
until the shadow card is settled, and that is shown to be sealed (it opens only with the key).

Also: HMAC and admin-token checks are decided by `hmac.compare_digest`. (The full matrix of
refused `/internal/*` requests is in tests/routers/test_internal.py.)
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clients.errors import UpstreamError
from app.crypto import SecretBox
from app.logging import configure_logging
from app.runtime import Runtime
from tests.conftest import PIN_KEY_HEX
from tests.faults.rig import (
    HTML_ERROR_PAGE,
    WEBHOOK_SECRET,
    OmniRig,
    ShadowRig,
    end_search_grace,
    omni_rig,
    shadow_rig,
    sign,
)

CARD_A, PIN_A = "6280007777771234", "73915862"
CARD_B, PIN_B = "6280005555554321", "24681357"
CARD_C, PIN_C = "6280003333336789", "86420975"
WRONG_PIN = "11112222"
SERIAL = "gc7734019926xq"
ADMIN_TOKEN = "test-admin-oua6Df4cIZNy6hMFDLFrsQyJmY2nJnF3"  # tests/conftest.py make_settings


def _forms(secret: str) -> set[str]:
    """How a secret could show up in text: as is, hex-encoded (a bytea dump), base64."""
    raw = secret.encode()
    return {
        secret.lower(),
        raw.hex(),
        base64.b64encode(raw).decode().lower(),
        base64.urlsafe_b64encode(raw).decode().rstrip("=").lower(),
    }


def find_secrets(haystack: str, secrets: Iterable[str]) -> list[str]:
    """The secrets found in `haystack` (named by their last 4 only, so a failure leaks none)."""
    lowered = haystack.lower()
    return [f"…{s[-4:]}" for s in secrets if any(form in lowered for form in _forms(s))]


class LogCapture(logging.Handler):
    """Every record the root logger emits, rendered by the app's own formatter (masking)."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Seen:
    """Everything the service answered, kept for the search."""

    answers: list[tuple[str, httpx.Response]] = field(default_factory=list)

    async def hook(self, response: httpx.Response) -> None:
        await response.aread()
        request = response.request
        self.answers.append((request.url.path, response))
        # What uvicorn's access log writes for each request in production (`giftsync serve`).
        # An earlier test in the same process may have silenced the logger (uvicorn's own
        # config does): the search needs the line written.
        access = logging.getLogger("uvicorn.access")
        access.disabled = False
        access.setLevel(logging.INFO)
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "10.0.0.1:5000",
            request.method,
            request.url.raw_path.decode(),
            "1.1",
            response.status_code,
        )


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[LogCapture]:
    """The app's log configuration at DEBUG, as `giftsync serve` sets it up; undone after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("DEBUG", json=True)
    capture = LogCapture(root.handlers[0].formatter)
    root.addHandler(capture)
    yield capture
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture(params=["retail", "onsite"])
async def rigs(
    request: pytest.FixtureRequest, runtime: Runtime, engine: AsyncEngine
) -> AsyncIterator[tuple[ShadowRig, OmniRig]]:
    async with (
        shadow_rig(runtime, engine) as shadow,
        omni_rig(runtime, engine, request.param, beside=shadow) as omni,
    ):
        yield shadow, omni


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def checkout_flows(rig: ShadowRig) -> dict[str, str]:
    """Apply, re-size, re-hold, pay; outages; release; failed PINs; one hold left open.

    Returns the shadow codes the checkout was given (each may appear only in its own answer).
    """
    rig.add_vii_card(CARD_A, PIN_A, "90.00")
    rig.add_vii_card(CARD_B, PIN_B, "40.00")
    rig.add_vii_card(CARD_C, PIN_C, "25.00")
    codes: dict[str, str] = {}

    applied = await rig.apply("60.00", card=CARD_A, pin=PIN_A, token="sweep-a")
    assert applied.status_code == 200, applied.text
    codes["a"] = applied.json()["shopifyGiftCardCode"]
    # Re-sized with the apply token; growing past the hold needs the PIN (409), then re-holds.
    assert (await rig.resize("20.00", card=CARD_A, token="sweep-a")).status_code == 200
    grow = await rig.resize("90.00", card=CARD_A, token="sweep-a")
    assert grow.status_code == 409 and grow.json()["code"] == "pin_required"
    no_proof = await rig.apply("20.00", card=CARD_A, pin=None, token="sweep-a")
    assert no_proof.status_code == 409 and no_proof.json()["code"] == "pin_required"
    assert (await rig.apply("70.00", card=CARD_A, pin=PIN_A, token="sweep-a")).status_code == 200
    wrong = await rig.apply("70.00", card=CARD_A, pin=WRONG_PIN, token="sweep-a")
    assert wrong.status_code == 403

    gid = rig.card_by_code(codes["a"])["id"]
    order = rig.shop_sim.create_order([(gid, Decimal("45.00"))])
    assert (await rig.webhook("orders/paid", order["webhooks"]["orders/paid"])).status_code == 200
    for payload in order["webhooks"]["order_transactions/create"]:
        assert (await rig.webhook("order_transactions/create", payload)).status_code == 200
    await rig.run_jobs()
    assert rig.vii_sim.balance(CARD_A) == Decimal("45.00")

    # Card B through a Vii outage, then a Shopify outage, then applied and released.
    rig.vii_sim.faults.error_rate = 1.0
    assert (await rig.apply("30.00", card=CARD_B, pin=PIN_B, token="sweep-b")).status_code == 503
    rig.clear_faults()
    rig.shop_wire.answer(HTML_ERROR_PAGE)
    assert (await rig.apply("30.00", card=CARD_B, pin=PIN_B, token="sweep-b")).status_code == 503
    rig.clear_faults()
    await end_search_grace(rig.engine)
    await rig.run_jobs()
    applied_b = await rig.apply("30.00", card=CARD_B, pin=PIN_B, token="sweep-b")
    assert applied_b.status_code == 200, applied_b.text
    codes["b"] = applied_b.json()["shopifyGiftCardCode"]
    assert (await rig.release(codes["b"], token="sweep-b")).status_code == 200
    await rig.run_jobs()

    # Card C stays applied: its hold is open, so its PIN is kept, sealed.
    applied_c = await rig.apply("25.00", card=CARD_C, pin=PIN_C, token="sweep-c")
    assert applied_c.status_code == 200, applied_c.text
    codes["c"] = applied_c.json()["shopifyGiftCardCode"]

    # Wrong PINs on a fresh checkout up to the lockout (the one at re-size counts too).
    for _ in range(4):
        refused = await rig.apply("10.00", card=CARD_A, pin=WRONG_PIN, token="sweep-a2")
        assert refused.status_code == 403
    locked = await rig.apply("10.00", card=CARD_A, pin=PIN_A, token="sweep-a2")
    assert locked.status_code == 429

    return codes


async def omni_flows(omni: OmniRig, web: ShadowRig) -> list[str]:
    """Sold in store (through a POS outage), mirrored both ways, one bought online.

    Returns the omni secrets: the in-store serial (also its Shopify code), and the Shopify code
    and POS serial of the card bought online.
    """
    flow = omni.flow
    customer = flow.add_customer("Ada", "Lovelace", "ada@example.com")
    external_id = flow.sell_in_store(SERIAL, "80.00", customer)
    omni.pos_faults.error_rate = 1.0
    with pytest.raises(UpstreamError):
        await flow.pollers.poll_pos()
    omni.clear_faults()
    await flow.pollers.poll_pos()
    await omni.run_jobs()
    card_id = await flow.omni.linked_card(flow.pos.system, external_id)
    assert card_id is not None
    gid = await omni.shopify_id(card_id)

    flow.spend_in_store(external_id, SERIAL, "12.50")
    await flow.pollers.poll_pos()
    await omni.run_jobs()
    order = flow.shop_sim.create_order([(gid, Decimal("20.00"))])
    for payload in order["webhooks"]["order_transactions/create"]:
        assert (await web.webhook("order_transactions/create", payload)).status_code == 200
    await omni.run_jobs()
    assert flow.pos_money(external_id, SERIAL) == Decimal("47.50")
    assert flow.shopify_card(gid)["balance"] == Decimal("47.50")

    await flow.pollers.poll_shopify()  # live sync of online sales starts now
    bought = flow.shop_sim.create_order(
        [], [Decimal("25.00")], shipping_name="Grace Hopper", email="grace@example.com"
    )
    assert (await web.webhook("orders/paid", bought["webhooks"]["orders/paid"])).status_code == 200
    await omni.run_jobs()
    online = bought["purchased_gift_cards"][0]
    online_serial = flow.omni.pos_serial_for(online["id"])
    assert await flow.pos.find_by_serial(online_serial) is not None
    return [SERIAL, online["code"], online_serial]


async def operator_looks(web: ShadowRig, engine: AsyncEngine) -> None:
    http = web.http
    for query in ({"serial": SERIAL}, {"last4": CARD_A[-4:]}, {"email": "ada@example.com"}):
        found = await http.get("/internal/cards", params=query, headers=ADMIN)
        assert found.status_code == 200, found.text
    async with engine.connect() as connection:
        card_ids = [row[0] for row in await connection.execute(text("SELECT id FROM gift_cards"))]
    for card_id in card_ids:
        assert (await http.get(f"/internal/cards/{card_id}", headers=ADMIN)).status_code == 200
    for state in ("dead", "done", "queued"):
        listed = await http.get("/internal/jobs", params={"state": state}, headers=ADMIN)
        assert listed.status_code == 200
    assert (await http.get("/internal/jobs")).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert (await http.get("/internal/jobs", headers=wrong)).status_code == 401
    assert (await http.get("/metrics")).status_code == 200
    assert (await http.get("/readyz")).status_code in (200, 503)


async def table_dump(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as connection:
        tables = [
            row[0]
            for row in await connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
        ]
        dump: dict[str, str] = {}
        for table in tables:
            rows = await connection.execute(text(f'SELECT row_to_json(t)::text FROM "{table}" t'))
            dump[table] = "\n".join(row[0] for row in rows)
    return dump


async def test_no_secret_in_logs_answers_metrics_or_database(
    rigs: tuple[ShadowRig, OmniRig],
    engine: AsyncEngine,
    logs: LogCapture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    web, omni = rigs
    seen = Seen()
    web.http.event_hooks = {"response": [seen.hook]}

    codes = await checkout_flows(web)
    omni_secrets = await omni_flows(omni, web)
    await operator_looks(web, engine)

    secrets = [CARD_A, CARD_B, CARD_C, PIN_A, PIN_B, PIN_C, WRONG_PIN, *omni_secrets]
    secrets += [ADMIN_TOKEN, WEBHOOK_SECRET, *codes.values()]
    # Every apply token handed out (a re-size proved by PIN hands out a fresh one).
    apply_tokens = {
        response.json()["applyToken"]
        for path, response in seen.answers
        if path == "/check-balance" and response.status_code == 200
    }
    assert len(apply_tokens) == 4  # a, a re-held by PIN, b, c: the re-size kept its token
    secrets += sorted(apply_tokens)

    # Logs: what the app's handler wrote (stderr), and every record through its formatter.
    printed = capsys.readouterr()
    assert len(logs.lines) > 50 and any("uvicorn.access" in line for line in logs.lines)
    assert find_secrets(printed.out + printed.err, secrets) == []
    leaking = [(n, find_secrets(line, secrets)) for n, line in enumerate(logs.lines)]
    assert [hit for hit in leaking if hit[1]] == []

    # Answers: bodies and headers; a check-balance answer carries the code it hands out.
    assert len(seen.answers) > 30
    problems = 0
    for path, response in seen.answers:
        allowed = set()
        if path == "/check-balance" and response.status_code == 200:
            allowed = {response.json()["shopifyGiftCardCode"], response.json()["applyToken"]}
        searched = [s for s in secrets if s not in allowed]
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        assert find_secrets(response.text + "\n" + headers, searched) == [], (
            path,
            response.status_code,
        )
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            problems += 1
    assert problems >= 8  # 409, 403s, 503s, 429, 401s were all searched
    metrics = [r for p, r in seen.answers if p == "/metrics"]
    assert metrics and "giftsync_http_requests_total" in metrics[0].text

    # The database: every column of every table.
    dump = await table_dump(engine)
    assert {"shadow_cards", "card_links", "ledger", "jobs", "webhook_inbox"} <= dump.keys()
    found = {table: find_secrets(rows, secrets) for table, rows in dump.items()}
    assert {table: hits for table, hits in found.items() if hits} == {}


async def test_the_pin_of_an_open_hold_is_sealed_not_stored(
    rigs: tuple[ShadowRig, OmniRig], engine: AsyncEngine
) -> None:
    web, _ = rigs
    web.add_vii_card(CARD_C, PIN_C, "25.00")
    response = await web.apply("25.00", card=CARD_C, pin=PIN_C, token="sealed")
    assert response.status_code == 200
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT id, pin_ciphertext, card_number_ciphertext, shopify_code_ciphertext "
                    "FROM shadow_cards"
                )
            )
        ).one()
        columns = [
            r[0]
            for r in await connection.execute(
                text(
                    "SELECT table_name || '.' || column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type = 'bytea'"
                )
            )
        ]
    # Every byte column is a ciphertext column.
    assert all(column.endswith("_ciphertext") for column in columns), columns
    box = SecretBox(PIN_KEY_HEX)
    for blob, context, plain in (
        (row.pin_ciphertext, f"pin:{row.id}", PIN_C),
        (row.card_number_ciphertext, f"number:{row.id}", CARD_C),
        (row.shopify_code_ciphertext, f"code:{row.id}", response.json()["shopifyGiftCardCode"]),
    ):
        assert find_secrets(bytes(blob).hex(), [plain]) == []
        assert plain.encode() not in bytes(blob)
        assert box.open(bytes(blob), context) == plain
        with pytest.raises(ValueError):
            SecretBox("ff" * 32).open(bytes(blob), context)  # another key opens nothing
        with pytest.raises(ValueError):
            box.open(bytes(blob), f"pin:{uuid.uuid4()}")  # nor on another row


# --- constant-time comparisons -----------------------------------------------------------------


def _webhook_headers(body: bytes, signature: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "shop/update",
        "X-Shopify-Webhook-Id": uuid.uuid4().hex,
        "X-Shopify-Hmac-Sha256": signature,
    }


async def test_webhook_hmac_and_admin_token_are_decided_by_compare_digest(
    client: httpx.AsyncClient, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hmac.compare_digest
    calls: list[tuple[Any, Any]] = []
    verdict: dict[str, bool | None] = {"forced": None}

    def recording(left: Any, right: Any) -> bool:
        calls.append((left, right))
        forced = verdict["forced"]
        return real(left, right) if forced is None else forced

    monkeypatch.setattr(hmac, "compare_digest", recording)
    body = json.dumps({"id": 1}).encode()
    good = sign(body)

    ok = await client.post("/webhooks/shopify", content=body, headers=_webhook_headers(body, good))
    assert ok.status_code == 200
    assert calls == [(good.encode(), good.encode())]

    calls.clear()
    forged = base64.b64encode(b"\x00" * 32).decode()
    refused = await client.post(
        "/webhooks/shopify", content=body, headers=_webhook_headers(body, forged)
    )
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_hmac"
    assert calls == [(good.encode(), forged.encode())]

    calls.clear()
    assert (await client.get("/internal/jobs?state=dead", headers=ADMIN)).status_code == 200
    assert calls == [(ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode())]
    calls.clear()
    wrong = {"Authorization": "Bearer not-the-token"}
    denied = await client.get("/internal/jobs?state=dead", headers=wrong)
    assert denied.status_code == 401 and denied.json()["code"] == "unauthorized"
    assert calls == [(ADMIN_TOKEN.encode(), b"not-the-token")]

    # compare_digest alone decides: made to say "equal", the forged values pass; made to say
    # "different", the genuine ones fail. No other comparison stands beside it.
    verdict["forced"] = True
    forged_ok = await client.post(
        "/webhooks/shopify", content=body, headers=_webhook_headers(body, forged)
    )
    assert forged_ok.status_code == 200
    assert (await client.get("/internal/jobs?state=dead", headers=wrong)).status_code == 200
    verdict["forced"] = False
    genuine = await client.post(
        "/webhooks/shopify", content=body, headers=_webhook_headers(body, good)
    )
    assert genuine.status_code == 401
    assert (await client.get("/internal/jobs?state=dead", headers=ADMIN)).status_code == 401


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/internal/jobs"),
        ("GET", "/internal/cards?serial=" + SERIAL),
        ("POST", "/internal/reconcile"),
        ("POST", "/internal/backfill"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer not-the-token"])
async def test_internal_is_closed_without_the_token(
    client: httpx.AsyncClient, engine: AsyncEngine, method: str, url: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    body = {"dryRun": True} if url.endswith("reconcile") else {"direction": "both"}
    response = await client.request(
        method, url, headers=headers, json=body if method == "POST" else None
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "unauthorized"
    assert find_secrets(response.text, [SERIAL, ADMIN_TOKEN]) == []
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM runs")) == 0
