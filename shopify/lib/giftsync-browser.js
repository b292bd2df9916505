// @ts-check
/**
 * The browser bundle: the theme block's asset (extensions/vii-cart-block/assets/
 * giftsync-cart-block.js) and the sandbox demo's script (app/static/checkout.js) are both
 * this file bundled, byte for byte (`npm run sync` writes them; a test checks them).
 *
 * It exposes `window.GiftSync` for pages that drive the logic themselves (the demo), and
 * mounts every `[data-giftsync-cart-block]` element it finds (the theme block).
 */

import {
  MESSAGES,
  checkBalanceEndpoints,
  createGiftCardSession,
  messageFor,
  normalizeBaseUrl,
} from "./giftsync-checkout.js";
import { mountCartBlock } from "./giftsync-cart-block.js";
import { mountGiftCardWidget } from "./giftsync-widget.js";

const api = Object.freeze({
  MESSAGES,
  checkBalanceEndpoints,
  createGiftCardSession,
  messageFor,
  mountCartBlock,
  mountGiftCardWidget,
  normalizeBaseUrl,
});

/** @type {any} */ (globalThis).GiftSync = api;

function mountCartBlocks() {
  for (const element of document.querySelectorAll("[data-giftsync-cart-block]")) {
    if (element instanceof HTMLElement && !element.dataset.giftsyncMounted) {
      element.dataset.giftsyncMounted = "true";
      mountCartBlock(element);
    }
  }
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mountCartBlocks, { once: true });
  } else {
    mountCartBlocks();
  }
  // The theme editor re-renders a section without reloading the page.
  document.addEventListener("shopify:section:load", mountCartBlocks);
}
