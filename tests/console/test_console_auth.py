"""Console sign-in, sessions, CSRF and sign-out (DESIGN 3, issue 17)."""

from __future__ import annotations

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import operators
from app.db.engine import SessionFactory, transaction
from app.runtime import Runtime
from tests.conftest import make_settings
from tests.console.conftest import ADMIN_TOKEN, Console, csrf_of, sign_in

NAMED_TOKEN = "named-operator-token-5c1f0e2d9a8b7c6d5e4f3a2b1c0d9e8f"


async def _audit(engine: AsyncEngine) -> list[tuple[str, str, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT operator, action, status FROM audit_log ORDER BY id")
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_pages_send_a_stranger_to_sign_in(web: httpx.AsyncClient) -> None:
    for path in ("/console", "/console/findings", "/console/settings", "/console/liability.csv"):
        response = await web.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == f"/console/sign-in?next={path}"
    refused = await web.post("/console/settings", data={"plan": "growth"})
    assert refused.status_code == 303
    assert refused.headers["location"] == "/console/sign-in"


async def test_sign_in_sets_a_strict_http_only_session_cookie(
    web: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await sign_in(web, next_path="/console/findings")

    assert response.status_code == 303
    assert response.headers["location"] == "/console/findings"
    cookie = next(
        value
        for name, value in response.headers.multi_items()
        if name == "set-cookie" and value.startswith("giftsync_console=")
    )
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/console" in cookie.lower()
    # Plain http on 127.0.0.1 (the sandbox) must still work: Secure only over https.
    assert "secure" not in attributes
    session_id = cookie.split(";")[0].split("=", 1)[1]
    async with engine.connect() as connection:
        stored = (await connection.execute(text("SELECT * FROM console_sessions"))).one()
    assert stored.operator == "admin"
    assert session_id not in str(tuple(stored))  # only its hash is kept
    assert (await _audit(engine)) == [("admin", "POST /console/sign-in", 303)]
    assert (await web.get("/console/findings")).status_code == 200


async def test_cookies_are_secure_over_https(runtime: Runtime) -> None:
    from app.main import create_app

    def secure(response: httpx.Response) -> list[bool]:
        cookies = [v for n, v in response.headers.multi_items() if n == "set-cookie"]
        return ["; secure" in cookie.lower() for cookie in cookies]

    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://giftsync.test") as client:
        assert secure(await client.get("/console/sign-in")) == [True]
        response = await sign_in(client)
        assert response.status_code == 303
        assert secure(response) == [True, True]  # the session, and the sign-in token cleared
    # PUBLIC_URL https (behind a TLS proxy that speaks http to giftsync): Secure as well.
    runtime.settings = make_settings(public_url="https://giftsync.example.com")
    async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as client:
        assert secure(await client.get("/console/sign-in")) == [True]


async def test_wrong_token_is_refused_and_counted(
    web: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await sign_in(web, token="not-an-operator-token")

    assert response.status_code == 401
    assert "That token is not an operator token." in response.text
    assert "giftsync_console=" not in response.headers.get("set-cookie", "")
    assert (await web.get("/console")).status_code == 303
    async with engine.connect() as connection:
        failures = (
            await connection.execute(text("SELECT address, scope FROM auth_failures"))
        ).all()
    assert [tuple(row) for row in failures] == [("127.0.0.1", "console")]
    assert await _audit(engine) == []


async def test_ten_failures_lock_the_address_out_even_with_the_right_token(
    web: httpx.AsyncClient,
) -> None:
    for _ in range(10):
        assert (await sign_in(web, token="wrong")).status_code == 401
    locked = await sign_in(web)
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "900"
    assert "Too many failed sign-ins" in locked.text
    assert (await web.get("/console")).status_code == 303


async def test_a_named_operator_signs_in_and_is_out_once_revoked(
    web: httpx.AsyncClient, sessions: SessionFactory, engine: AsyncEngine
) -> None:
    async with transaction(sessions) as session:
        await operators.add(session, "dana", NAMED_TOKEN)
    assert (await sign_in(web, token=NAMED_TOKEN)).status_code == 303
    page = await web.get("/console")
    assert page.status_code == 200
    assert "Signed in as <strong>dana</strong>" in page.text

    async with engine.begin() as connection:
        await connection.execute(text("UPDATE operators SET revoked_at = now()"))
    assert (await web.get("/console")).status_code == 303


async def test_sign_in_form_without_its_token_is_refused(web: httpx.AsyncClient) -> None:
    await web.get("/console/sign-in")
    response = await web.post("/console/sign-in", data={"token": ADMIN_TOKEN})
    assert response.status_code == 403
    forged = await web.post("/console/sign-in", data={"token": ADMIN_TOKEN, "csrf": "guess"})
    assert forged.status_code == 403
    assert "giftsync_console=" not in forged.headers.get("set-cookie", "")


async def test_posts_without_the_session_csrf_token_are_refused(
    console: Console, engine: AsyncEngine
) -> None:
    for path, form in [
        ("/console/settings", {"plan": "growth", "shopify_serial_prefix": "1000"}),
        ("/console/runs/reconcile", {"dry_run": "on"}),
        ("/console/lockouts/clear", {"vii_card_number": "6280001234567890"}),
        ("/console/sign-out", {}),
    ]:
        missing = await console.http.post(path, data=form)
        assert missing.status_code == 403, path
        wrong = await console.http.post(path, data={**form, "csrf": console.csrf[:-1] + "x"})
        assert wrong.status_code == 403, path
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM runs")) == 0
        assert await connection.scalar(text("SELECT count(*) FROM merchant_settings")) == 0
    # Refusals by a signed-in operator are in the audit log too.
    assert [status for _, _, status in await _audit(engine)][1:] == [403] * 8
    assert (await console.http.get("/console")).status_code == 200


async def test_session_ends_after_eight_idle_hours(console: Console, engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE console_sessions SET last_seen_at = now() - interval '7 hours 59 minutes'")
        )
    assert (await console.http.get("/console")).status_code == 200  # and the clock restarts
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE console_sessions SET last_seen_at = now() - interval '8 hours 1 second'")
        )
    assert (await console.http.get("/console")).status_code == 303
    # A session that expired is deleted at the next sign-in.
    assert (await sign_in(console.http)).status_code == 303
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM console_sessions")) == 1


async def test_sign_out_ends_the_session(console: Console, engine: AsyncEngine) -> None:
    response = await console.post("/console/sign-out")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in?signed_out=1"
    assert "You are signed out." in (await console.http.get(response.headers["location"])).text
    assert (await console.http.get("/console")).status_code == 303
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM console_sessions")) == 0
    assert (await _audit(engine))[-1] == ("admin", "POST /console/sign-out", 303)


async def test_next_never_leaves_the_console(web: httpx.AsyncClient) -> None:
    for target in ("https://evil.example/", "//evil.example/console", "/consolex", "/console?x=1"):
        response = await sign_in(web, next_path=target)
        assert response.headers["location"] == "/console"


async def test_pages_are_not_cached_and_not_framed(console: Console) -> None:
    page = await console.http.get("/console")
    assert page.headers["cache-control"] == "no-store"
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert csrf_of(page.text) == console.csrf
