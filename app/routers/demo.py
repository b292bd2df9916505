"""`GET /demo/checkout`: a sandbox page that runs the shared checkout logic against a simulated
cart (`static/checkout.js` is the browser bundle of `shopify/lib`, DESIGN 9)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.problems import Problem, problem_schema

STATIC_DIRECTORY = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["demo"], include_in_schema=False)

# Static markup: nothing from the request is ever interpolated into it.
_DEMO_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>giftsync checkout demo</title>
<link rel="stylesheet" href="/static/demo-checkout.css">
</head>
<body>
<h1>giftsync checkout demo</h1>
<p class="note">Sandbox only. The demo Vii cards (number, PIN and balance) are printed in the
server log when the sandbox starts. This page runs the same checkout logic as the Shopify
extensions (shopify/lib). It calls giftsync at <code id="api-origin"></code>; add
<code>?api=http://127.0.0.1:8000</code> to call another origin.</p>

<fieldset>
  <legend>Cart</legend>
  <label>Cart total $ <input id="cart-total" name="cartTotal" value="80.00"
    inputmode="decimal" autocomplete="off"></label>
  <button id="update-cart" type="button">Update cart</button>
</fieldset>

<fieldset>
  <legend>Gift card</legend>
  <div id="giftsync"></div>
</fieldset>

<fieldset>
  <legend>Gift card codes applied by the checkout</legend>
  <p id="applied-code">None</p>
  <ul id="code-log"></ul>
</fieldset>

<script src="/static/checkout.js"></script>
<script src="/static/demo-checkout.js"></script>
</body>
</html>
"""


@router.get(
    "/demo/checkout",
    response_class=HTMLResponse,
    responses={404: problem_schema("`not_found` outside sandbox mode")},
)
async def demo_checkout(request: Request) -> HTMLResponse:
    # A production checkout has no use for a page that invites test card numbers.
    if not request.app.state.runtime.settings.sandbox_enabled:
        raise Problem(404, "not_found", "The demo checkout exists only in sandbox mode.")
    return HTMLResponse(_DEMO_PAGE, headers={"Cache-Control": "no-store"})


def mount_static(app: FastAPI) -> None:
    """Serve `app/static` (the checkout bundle and the demo's glue) at `/static`."""
    app.mount("/static", StaticFiles(directory=STATIC_DIRECTORY), name="static")
