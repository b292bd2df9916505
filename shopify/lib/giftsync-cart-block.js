// @ts-check
/**
 * The theme app block on the cart page (every Shopify plan): Vii card entry that calls
 * giftsync through Shopify's app proxy (`/apps/giftsync/...` on the shop's own domain,
 * forwarded signed to `{PUBLIC_URL}/proxy/...`), then shows the code the shopper types
 * into checkout's own gift card field.
 *
 * The block's Liquid writes its settings and the cart as data attributes
 * (extensions/vii-cart-block/blocks/vii-gift-card.liquid); the cart total is followed
 * through the Ajax Cart API whenever the theme changes the cart.
 */

import { createGiftCardSession, fromCents, systemClock } from "./giftsync-checkout.js";
import { mountGiftCardWidget } from "./giftsync-widget.js";

// The Ajax Cart API calls that change a cart (shopify.dev/docs/api/ajax/reference/cart).
const CART_CHANGE = /\/cart\/(add|change|update|clear)(\.js)?$/;
const CART_REFRESH_DELAY_MS = 250;

/**
 * @typedef {import('./giftsync-checkout.js').Clock} Clock
 * @typedef {import('./giftsync-checkout.js').GiftCardSession} GiftCardSession
 */

/**
 * @typedef {object} CartBlockOptions
 * @property {typeof fetch} [fetch]
 * @property {Clock} [clock]
 * @property {(onChange: () => void) => () => void} [watchCart]  calls back after the theme
 *   changes the cart; returns a function that stops watching
 */

/**
 * @typedef {object} CartBlock
 * @property {GiftCardSession} session
 * @property {() => Promise<void>} refreshCart
 * @property {() => void} destroy
 */

/**
 * Watch the page's own requests for cart changes, whatever the theme's JavaScript is.
 * @param {() => void} onChange
 * @returns {() => void}
 */
export function watchCartRequests(onChange) {
  if (typeof PerformanceObserver !== "function") {
    return () => undefined;
  }
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      let path = "";
      try {
        path = new URL(entry.name).pathname;
      } catch {
        continue;
      }
      if (CART_CHANGE.test(path)) {
        onChange();
        return;
      }
    }
  });
  observer.observe({ type: "resource", buffered: false });
  const onPageShow = () => onChange();
  // Back/forward cache: the cart may have changed in another tab meanwhile.
  globalThis.addEventListener?.("pageshow", onPageShow);
  return () => {
    observer.disconnect();
    globalThis.removeEventListener?.("pageshow", onPageShow);
  };
}

/**
 * @param {string | undefined} currency
 * @param {string | undefined} locale
 * @returns {(amount: string) => string}
 */
function moneyFormatter(currency, locale) {
  if (!currency) {
    return (amount) => amount;
  }
  try {
    const format = new Intl.NumberFormat(locale || undefined, { style: "currency", currency });
    // Display only: the amount itself stays the server's decimal string everywhere else.
    return (amount) => format.format(Number(amount));
  } catch {
    return (amount) => `${amount} ${currency}`;
  }
}

/**
 * Mount one app block. `element` carries the data attributes the Liquid block writes.
 * @param {HTMLElement} element
 * @param {CartBlockOptions} [options]
 * @returns {CartBlock}
 */
export function mountCartBlock(element, options = {}) {
  const data = element.dataset;
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const clock = options.clock ?? systemClock;
  const proxyPath = (data.proxyPath || "/apps/giftsync").replace(/\/+$/, "");
  const cartUrl = (data.cartUrl || "/cart").replace(/\/+$/, "");
  let cartToken = data.cartToken || "";

  const session = createGiftCardSession({
    baseUrl: "",
    path: `${proxyPath}/check-balance`,
    checkoutToken: () => cartToken,
    // Same origin: the storefront session cookie lets the proxy sign the customer in.
    credentials: "same-origin",
    fetch: fetchImpl,
    clock,
  });
  const widget = mountGiftCardWidget(element, {
    session,
    showCode: true,
    formatMoney: moneyFormatter(data.currency, element.ownerDocument.documentElement.lang),
    ...(data.heading ? { heading: data.heading } : {}),
  });
  const initialCents = Number(data.cartTotalCents);
  if (Number.isSafeInteger(initialCents) && initialCents >= 0) {
    session.setCartTotal(fromCents(initialCents));
  }

  async function refreshCart() {
    try {
      const response = await fetchImpl(`${cartUrl}.js`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      const cart = /** @type {{token?: unknown, total_price?: unknown}} */ (await response.json());
      if (typeof cart.token === "string" && cart.token) {
        cartToken = cart.token;
      }
      // The Ajax API gives integer cents (`total_price`).
      if (typeof cart.total_price === "number" && Number.isSafeInteger(cart.total_price)) {
        session.setCartTotal(fromCents(cart.total_price));
      }
    } catch {
      // The next cart change tries again; the card keeps its amount meanwhile.
    }
  }

  /** @type {unknown} */
  let refreshTimer = null;
  const stopWatching = (options.watchCart ?? watchCartRequests)(() => {
    clock.clearTimeout(refreshTimer);
    refreshTimer = clock.setTimeout(() => {
      refreshTimer = null;
      void refreshCart();
    }, CART_REFRESH_DELAY_MS);
  });

  return {
    session,
    refreshCart,
    destroy() {
      stopWatching();
      clock.clearTimeout(refreshTimer);
      widget.destroy();
      session.dispose();
    },
  };
}
