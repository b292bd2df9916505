"""`/docs` and `/redoc` without internet: every asset from giftsync, a CSP with no 'unsafe-inline'
(issue 17)."""

from __future__ import annotations

import re

import httpx

from app.response_headers import page_policy


def _nonce(policy: str) -> str:
    found = re.search(r"script-src 'self' 'nonce-([A-Za-z0-9_-]+)'", policy)
    assert found is not None, policy
    return found.group(1)


async def test_swagger_ui_loads_only_local_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources == [
        "/docs/assets/favicon.png",
        "/docs/assets/swagger-ui.css",
        "/docs/assets/swagger-ui-bundle.js",
        "/static/docs-swagger.js",
    ]
    assert "<script>" not in page.text and "<style" not in page.text
    assert 'data-openapi-url="/openapi.json"' in page.text
    for source in sources:
        asset = await client.get(source)
        assert asset.status_code == 200, source
        assert len(asset.content) > 0
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text
    assert bundle.headers["content-type"].startswith(("text/javascript", "application/javascript"))


async def test_redoc_gets_the_nonce_of_its_own_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/redoc")
    assert page.status_code == 200
    nonce = _nonce(page.headers["content-security-policy"])
    assert f'<script src="/static/docs-redoc.js" nonce="{nonce}"></script>' in page.text
    assert '<script src="/docs/assets/redoc.standalone.js"></script>' in page.text
    assert (await client.get("/docs/assets/redoc.standalone.js")).status_code == 200
    again = await client.get("/redoc")
    assert _nonce(again.headers["content-security-policy"]) != nonce


async def test_pages_have_a_strict_policy_and_other_answers_load_nothing(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/docs", "/redoc", "/console/sign-in"):
        policy = (await client.get(path)).headers["content-security-policy"]
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "frame-ancestors 'none'" in policy
        assert "default-src 'self'" in policy
        assert "connect-src 'self';" in policy
    assert page_policy("n", "/demo/checkout").count("connect-src 'self' http: https:") == 1
    for path in ("/healthz", "/openapi.json"):
        answer = await client.get(path)
        assert answer.headers["content-security-policy"] == (
            "default-src 'none'; frame-ancestors 'none'"
        )
        assert "x-frame-options" not in answer.headers


async def test_the_demo_page_needs_no_inline_style(client: httpx.AsyncClient) -> None:
    page = await client.get("/demo/checkout")
    assert "<style" not in page.text
    assert '<link rel="stylesheet" href="/static/demo-checkout.css">' in page.text
    css = await client.get("/static/demo-checkout.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
