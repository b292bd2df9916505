/*
 * The sandbox demo's stand-in for a checkout (GET /demo/checkout): a cart total, and a list of
 * applied gift card codes where Shopify's checkout would apply them. Everything else is the
 * shared checkout logic in checkout.js (the browser bundle of shopify/lib), exactly as the
 * Shopify extensions run it.
 *
 * `?api=<origin>` makes the page call giftsync on another origin (CORS exercised for real);
 * only an HTTPS address, or plain HTTP to this machine, is accepted.
 */
(function () {
  "use strict";

  var GiftSync = window.GiftSync;
  var cartTotal = document.getElementById("cart-total");
  var appliedCode = document.getElementById("applied-code");
  var codeLog = document.getElementById("code-log");
  var applied = [];

  var requested = new URLSearchParams(window.location.search).get("api");
  var baseUrl = requested ? GiftSync.normalizeBaseUrl(requested) : "";
  if (baseUrl === null) {
    baseUrl = "";
  }
  document.getElementById("api-origin").textContent = baseUrl || window.location.origin;

  var randomPart = new Uint32Array(2);
  window.crypto.getRandomValues(randomPart);
  var checkoutToken = "demo-" + randomPart[0].toString(36) + randomPart[1].toString(36);

  function logLine(text) {
    var item = document.createElement("li");
    item.textContent = text;
    codeLog.appendChild(item);
  }

  function showApplied() {
    appliedCode.textContent = applied.length ? applied.join(", ") : "None";
  }

  var session = GiftSync.createGiftCardSession({
    baseUrl: baseUrl,
    checkoutToken: checkoutToken,
    applyCode: function (code) {
      applied.push(code);
      showApplied();
      logLine("applyCode(" + code + ")");
      return { ok: true };
    },
    removeCode: function (code) {
      applied = applied.filter(function (each) {
        return each !== code;
      });
      showApplied();
      logLine("removeCode(" + code + ")");
      return { ok: true };
    }
  });
  session.setCartTotal(cartTotal.value);
  GiftSync.mountGiftCardWidget(document.getElementById("giftsync"), { session: session });

  function updateCart() {
    session.setCartTotal(cartTotal.value);
  }
  document.getElementById("update-cart").addEventListener("click", updateCart);
  cartTotal.addEventListener("change", updateCart);
  // For tests and the curious: the session behind the page.
  window.giftsyncDemo = { session: session, checkoutToken: checkoutToken };
})();
