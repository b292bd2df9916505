// @ts-check
/**
 * giftsync's checkout logic: pay part of an order with Vii gift cards (DESIGN 1.B, 3, 9).
 *
 * One framework-free, DOM-free module used unchanged by the checkout UI extension (a web
 * worker inside Shopify's checkout), the theme app block on the cart page and the sandbox
 * demo page. It calls `POST /check-balance`, re-sizes every applied card when the order
 * total changes, releases a card when the shopper removes it, and turns every problem
 * `code` into a sentence a shopper can act on.
 *
 * - Money stays a decimal string on the wire. The only arithmetic (what is left for the
 *   next card to cover) is done on integer cents, never on binary fractions.
 * - The Vii card number and each card's `applyToken` live only in this closure; the PIN
 *   is sent once and never kept. Views see masked numbers, amounts and the Shopify code.
 * - One request at a time: applies, re-sizes and releases run in order, so no card ever
 *   has two calls in flight, and a burst of total changes becomes one re-size pass.
 * - `fetch` and the clock are injected, so every timing rule is testable without waiting.
 */

const CARD_NUMBER = /^[0-9]{12,19}$/;
const PIN = /^[0-9]{4,8}$/;
const DECIMAL = /^([0-9]+)(?:\.([0-9]{1,2}))?$/;
// What giftsync accepts as `checkoutToken` (app/routers/checkout.py); anything else is hashed.
const SERVER_TOKEN = /^[A-Za-z0-9._:~-]{1,255}$/;

const DEFAULT_RESIZE_DELAY_MS = 400;
const DEFAULT_REQUEST_TIMEOUT_MS = 15000;
// Re-sizes the shopper did not ask for are retried a few times on their own, then left.
const MAX_AUTOMATIC_RETRIES = 3;
// Used when `Retry-After` is missing or hidden (a cross-origin answer exposes it only when
// the server lists it in `Access-Control-Expose-Headers`).
/** @type {Readonly<Record<string, number>>} */
const FALLBACK_RETRY_SECONDS = Object.freeze({
  busy: 2,
  vii_unavailable: 30,
  shopify_unavailable: 30,
  network_error: 5,
});

/**
 * @typedef {'invalid_request' | 'card_empty' | 'invalid_card_or_pin' | 'card_not_active'
 *   | 'pin_required' | 'card_locked' | 'too_many_attempts' | 'busy' | 'vii_unavailable'
 *   | 'shopify_unavailable' | 'invalid_session_token' | 'invalid_proxy_signature'
 *   | 'not_found'} ServerProblemCode
 * @typedef {ServerProblemCode | 'network_error' | 'invalid_card_number' | 'invalid_pin'
 *   | 'already_covered' | 'cart_total_unknown' | 'checkout_not_ready' | 'not_configured'
 *   | 'checkout_refused' | 'unexpected_answer' | 'unknown'} ProblemCode
 */

/** @param {string | null} wait */
const orLater = (wait) => (wait ? ` in ${wait}` : " in a moment");

/**
 * The sentence shown for each problem; `wait` is "30 seconds" when the answer said how long.
 * @type {Readonly<Record<ProblemCode, (wait: string | null) => string>>}
 */
export const MESSAGES = Object.freeze({
  invalid_request: () =>
    "Check the card number (12 to 19 digits) and the PIN (4 to 8 digits), then try again.",
  card_empty: () => "This gift card has no balance left.",
  invalid_card_or_pin: () => "The card number or PIN is not right.",
  card_not_active: () =>
    "This gift card can't be used yet or has been cancelled. Please contact the store.",
  pin_required: () => "Enter your PIN to apply more of your gift card.",
  card_locked: () =>
    "This gift card is locked after too many wrong PINs. Please contact the store to unlock it.",
  too_many_attempts: (wait) =>
    `Too many tries. Please wait ${wait ?? "a while"} before trying again.`,
  busy: (wait) => `Your gift card is still being updated. Please try again${orLater(wait)}.`,
  vii_unavailable: (wait) =>
    `The gift card service isn't answering right now. Please try again${orLater(wait)}.`,
  shopify_unavailable: (wait) =>
    `The store couldn't prepare your gift card right now. Please try again${orLater(wait)}.`,
  invalid_session_token: () => "Your checkout session has expired. Refresh the page and try again.",
  invalid_proxy_signature: () =>
    "The store couldn't verify this request. Refresh the page and try again.",
  not_found: () => "This gift card is no longer applied to your order.",
  network_error: () =>
    "Could not reach the gift card service. Check your connection and try again.",
  invalid_card_number: () => "Enter the 12 to 19 digit number printed on your card.",
  invalid_pin: () => "Enter the 4 to 8 digit PIN of your card.",
  already_covered: () => "Your gift cards already cover this order.",
  cart_total_unknown: () => "The order total isn't known yet. Please try again in a moment.",
  checkout_not_ready: () => "Gift cards can't be applied yet. Refresh the page and try again.",
  not_configured: () => "Vii gift cards aren't set up for this store yet.",
  checkout_refused: () =>
    "Checkout didn't accept the gift card (express checkouts such as Apple Pay can't use it). " +
    "Your card was not charged.",
  unexpected_answer: () => "The gift card service gave an unexpected answer. Please try again.",
  unknown: () => "The gift card could not be applied. Please try again.",
});

const KNOWN_CODES = new Set(Object.keys(MESSAGES));

/**
 * "12.50" -> 1250; anything that is not a plain non-negative amount with at most two
 * decimals -> null.
 * @param {string} decimal
 * @returns {number | null}
 */
export function toCents(decimal) {
  const match = DECIMAL.exec(String(decimal).trim());
  if (!match) {
    return null;
  }
  const cents = Number(match[1]) * 100 + Number((match[2] ?? "").padEnd(2, "0"));
  return Number.isSafeInteger(cents) ? cents : null;
}

/**
 * 1250 -> "12.50".
 * @param {number} cents
 * @returns {string}
 */
export function fromCents(cents) {
  const whole = Math.floor(cents / 100);
  return `${whole}.${String(cents - whole * 100).padStart(2, "0")}`;
}

/**
 * A total as Shopify gives it (`Money.amount`, a JSON number such as 19.99) in cents.
 * Rounding to the nearest cent undoes the binary representation (19.99 * 100 is
 * 1998.9999999999998); nothing else is ever computed on the number.
 * @param {number} amount
 * @returns {number | null}
 */
export function centsFromNumber(amount) {
  if (typeof amount !== "number" || !Number.isFinite(amount) || amount < 0) {
    return null;
  }
  const cents = Math.round(amount * 100);
  return Number.isSafeInteger(cents) ? cents : null;
}

/**
 * `Retry-After` in seconds: delta-seconds or an HTTP-date (RFC 9110 10.2.3).
 * @param {string | null | undefined} value
 * @param {number} nowMs
 * @returns {number | null}
 */
export function parseRetryAfter(value, nowMs) {
  if (value === null || value === undefined) {
    return null;
  }
  const text = value.trim();
  if (/^[0-9]+$/.test(text)) {
    return Number(text);
  }
  const at = Date.parse(text);
  if (Number.isNaN(at)) {
    return null;
  }
  return Math.max(0, Math.ceil((at - nowMs) / 1000));
}

/**
 * 1 -> "1 second", 90 -> "2 minutes", 7200 -> "2 hours" (always rounded up).
 * @param {number} seconds
 * @returns {string}
 */
export function describeWait(seconds) {
  /** @param {number} n @param {string} unit */
  const plural = (n, unit) => `${n} ${unit}${n === 1 ? "" : "s"}`;
  if (seconds < 60) {
    return plural(Math.max(1, Math.ceil(seconds)), "second");
  }
  if (seconds < 3600) {
    return plural(Math.ceil(seconds / 60), "minute");
  }
  return plural(Math.ceil(seconds / 3600), "hour");
}

/**
 * The shopper's sentence for a problem code.
 * @param {string} code
 * @param {number | null} [retryAfterSeconds]
 * @returns {string}
 */
export function messageFor(code, retryAfterSeconds = null) {
  const wait = retryAfterSeconds ? describeWait(retryAfterSeconds) : null;
  const known = /** @type {ProblemCode} */ (KNOWN_CODES.has(code) ? code : "unknown");
  return MESSAGES[known](wait);
}

/**
 * The two endpoints under a base URL and path: `("https://g.example/", "/check-balance")`
 * for the checkout extension, `("", "/apps/giftsync/check-balance")` for the theme block
 * (through Shopify's app proxy, relative to the shop).
 * @param {string} baseUrl
 * @param {string} [path]
 * @returns {{checkBalance: string, release: string}}
 */
export function checkBalanceEndpoints(baseUrl, path = "/check-balance") {
  const base = String(baseUrl).trim().replace(/\/+$/, "");
  const suffix = `/${String(path).trim().replace(/^\/+|\/+$/g, "")}`;
  const checkBalance = `${base}${suffix}`;
  return { checkBalance, release: `${checkBalance}/release` };
}

/**
 * A merchant-typed giftsync address made usable, or null: HTTPS only, except plain HTTP
 * to this machine for development.
 * @param {unknown} raw
 * @returns {string | null}
 */
export function normalizeBaseUrl(raw) {
  if (typeof raw !== "string" || !raw.trim()) {
    return null;
  }
  let url;
  try {
    url = new URL(raw.trim());
  } catch {
    return null;
  }
  const local = url.hostname === "localhost" || url.hostname === "127.0.0.1";
  if (url.protocol !== "https:" && !(url.protocol === "http:" && local)) {
    return null;
  }
  if (url.search || url.hash || url.username || url.password) {
    return null;
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
}

/**
 * The checkout (or cart) token as giftsync accepts it. Cart tokens now carry `?key=...`
 * and may take any form (shopify.dev changelog, 2024-06-21), so a token outside giftsync's
 * pattern is sent as its SHA-256 digest: stable for the cart, and the key never leaves it.
 * @param {string | null | undefined} raw
 * @returns {Promise<string | undefined>}
 */
export async function tokenForGiftsync(raw) {
  if (typeof raw !== "string" || !raw) {
    return undefined;
  }
  if (SERVER_TOKEN.test(raw)) {
    return raw;
  }
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    return undefined;
  }
  const digest = await subtle.digest("SHA-256", new TextEncoder().encode(raw));
  const hex = Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0"));
  return `sha256-${hex.join("")}`;
}

/**
 * @typedef {object} Clock
 * @property {() => number} now  milliseconds, like Date.now()
 * @property {(callback: () => void, ms: number) => unknown} setTimeout
 * @property {(handle: unknown) => void} clearTimeout
 */

/** @type {Clock} */
export const systemClock = Object.freeze({
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) =>
    globalThis.clearTimeout(/** @type {ReturnType<typeof setTimeout>} */ (handle)),
});

/**
 * @typedef {{ok: true} | {ok: false, message?: string}} CodeChangeResult
 * @typedef {(code: string) => Promise<CodeChangeResult> | CodeChangeResult | void} CodeChange
 */

/**
 * @typedef {object} SessionOptions
 * @property {string | (() => string | null)} baseUrl  giftsync's address ("" = this origin)
 * @property {string} [path]  "/check-balance" (default) or the app proxy path
 * @property {string | null | undefined | (() => string | null | undefined)} checkoutToken
 * @property {() => Promise<string>} [sessionToken]  sent as `Authorization: Bearer ...`
 * @property {CodeChange} [applyCode]  puts a code into the checkout (checkout extension, demo)
 * @property {CodeChange} [removeCode]  takes it out again
 * @property {RequestCredentials} [credentials]  "omit" (default); "same-origin" on the proxy
 * @property {typeof fetch} [fetch]
 * @property {Clock} [clock]
 * @property {number} [resizeDelayMs]  quiet time after the last total change before re-sizing
 * @property {number} [requestTimeoutMs]
 * @property {(code: string, retryAfterSeconds: number | null) => string} [message]
 */

/**
 * @typedef {'applied' | 'updating' | 'needs_pin' | 'removing'} CardStatus
 * @typedef {object} CardView  what a view may show about one applied card
 * @property {number} id
 * @property {string} code  the Shopify gift card code (the shopper's to use)
 * @property {string} lastCharacters
 * @property {string} viiCardNumber  masked, e.g. "•••• 7890"
 * @property {string} amountApplied
 * @property {string} availableBalance
 * @property {string} viiBalance
 * @property {string} expiresAt
 * @property {CardStatus} status
 * @property {string | null} message
 * @property {string | null} messageCode
 */

/**
 * @typedef {object} SessionState
 * @property {CardView[]} cards
 * @property {boolean} applying
 * @property {string | null} message  the last problem of an apply, for the entry form
 * @property {string | null} messageCode
 * @property {number | null} retryAt  epoch ms before which Apply should stay disabled
 * @property {string | null} cartTotal
 */

/**
 * @typedef {object} GiftCardSession
 * @property {() => SessionState} getState
 * @property {(listener: (state: SessionState) => void) => () => void} subscribe
 * @property {(entry: {cardNumber: string, pin: string}) => Promise<boolean>} apply
 * @property {(cardId: number, pin: string) => Promise<boolean>} providePin
 * @property {(total: string | number) => void} setCartTotal
 * @property {(cardId: number) => Promise<boolean>} remove
 * @property {(lastCharacters: readonly string[]) => void} syncAppliedCodes
 * @property {() => Promise<void>} whenIdle
 * @property {() => void} dispose
 */

/**
 * @typedef {object} CardRecord
 * @property {number} id
 * @property {string} cardNumber
 * @property {string | undefined} applyToken
 * @property {string} checkoutToken  the token the card was applied under, for every later call
 * @property {string} code
 * @property {string} lastCharacters
 * @property {string} viiCardNumber
 * @property {string} amountApplied
 * @property {string} availableBalance
 * @property {string} viiBalance
 * @property {string} expiresAt
 * @property {number} sizedForCents  the cartTotal of its last successful sizing
 * @property {number | null} pinNeededForCents  a share that needed the PIN, if one did
 * @property {boolean} inCheckout  applyCode succeeded for `code`
 * @property {boolean} seenInCheckout  the checkout has listed it since
 * @property {CardStatus} status
 * @property {string | null} message
 * @property {string | null} messageCode
 */

/**
 * @typedef {{ok: true, status: number, data: Record<string, unknown>}
 *   | {ok: false, status: number, code: string, retryAfter: number | null}} CallResult
 */

/**
 * @param {unknown} data
 * @returns {data is Record<string, string>}
 */
function isApplyAnswer(data) {
  if (!data || typeof data !== "object") {
    return false;
  }
  const answer = /** @type {Record<string, unknown>} */ (data);
  return ["shopifyGiftCardCode", "amountApplied", "availableBalance"].every(
    (field) => typeof answer[field] === "string" && answer[field] !== "",
  ) && toCents(/** @type {string} */ (answer.amountApplied)) !== null;
}

/** @param {string} value */
const digitsOnly = (value) => String(value ?? "").replace(/[\s-]/g, "");

/**
 * Create the logic for one checkout (or cart).
 * @param {SessionOptions} options
 * @returns {GiftCardSession}
 */
export function createGiftCardSession(options) {
  const clock = options.clock ?? systemClock;
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const resizeDelayMs = options.resizeDelayMs ?? DEFAULT_RESIZE_DELAY_MS;
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const describe = options.message ?? messageFor;

  /** @type {Map<number, CardRecord>} in the order applied: earlier cards cover first */
  const records = new Map();
  /** @type {Set<(state: SessionState) => void>} */
  const listeners = new Set();
  let nextId = 1;
  /** @type {number | null} */
  let cartCents = null;
  let applying = false;
  /** @type {string | null} */
  let message = null;
  /** @type {string | null} */
  let messageCode = null;
  /** @type {number | null} */
  let retryAt = null;
  let disposed = false;
  /** @type {Set<string>} the checkout's applied gift cards (last characters), as last told */
  let listedInCheckout = new Set();

  /** @type {Promise<unknown>} */
  let tail = Promise.resolve();
  let passQueued = false;
  /** @type {Promise<void> | null} */
  let queuedPass = null;
  let automaticRetries = 0;
  /** @type {unknown} */
  let resizeTimer = null;
  /** @type {unknown} */
  let retryTimer = null;
  /** @type {unknown} */
  let retryAtTimer = null;

  /** @returns {SessionState} */
  function getState() {
    return {
      cards: Array.from(records.values(), (card) => ({
        id: card.id,
        code: card.code,
        lastCharacters: card.lastCharacters,
        viiCardNumber: card.viiCardNumber,
        amountApplied: card.amountApplied,
        availableBalance: card.availableBalance,
        viiBalance: card.viiBalance,
        expiresAt: card.expiresAt,
        status: card.status,
        message: card.message,
        messageCode: card.messageCode,
      })),
      applying,
      message,
      messageCode,
      retryAt,
      cartTotal: cartCents === null ? null : fromCents(cartCents),
    };
  }

  function emit() {
    if (disposed) {
      return;
    }
    const state = getState();
    for (const listener of listeners) {
      listener(state);
    }
  }

  /**
   * @param {string | null} code
   * @param {number | null} [retryAfter]
   */
  function setMessage(code, retryAfter = null) {
    messageCode = code;
    message = code ? describe(code, retryAfter) : null;
  }

  /**
   * @param {CardRecord} card
   * @param {string | null} code
   * @param {number | null} [retryAfter]
   */
  function setCardMessage(card, code, retryAfter = null) {
    card.messageCode = code;
    card.message = code ? describe(code, retryAfter) : null;
  }

  /**
   * Runs after everything queued before it; never two calls at once.
   * @template T
   * @param {() => Promise<T>} work
   * @returns {Promise<T>}
   */
  function enqueue(work) {
    const run = tail.then(work);
    tail = run.catch(() => undefined);
    return run;
  }

  function resolveBaseUrl() {
    const base = typeof options.baseUrl === "function" ? options.baseUrl() : options.baseUrl;
    return typeof base === "string" ? base : null;
  }

  async function resolveCheckoutToken() {
    const raw =
      typeof options.checkoutToken === "function" ? options.checkoutToken() : options.checkoutToken;
    return tokenForGiftsync(raw);
  }

  /**
   * @param {'checkBalance' | 'release'} which
   * @param {Record<string, unknown>} body
   * @returns {Promise<CallResult>}
   */
  async function post(which, body) {
    const base = resolveBaseUrl();
    if (base === null) {
      return { ok: false, status: 0, code: "not_configured", retryAfter: null };
    }
    /** @type {Record<string, string>} */
    const headers = {
      "Content-Type": "application/json",
      Accept: "application/json, application/problem+json",
    };
    if (options.sessionToken) {
      try {
        headers.Authorization = `Bearer ${await options.sessionToken()}`;
      } catch {
        return { ok: false, status: 0, code: "invalid_session_token", retryAfter: null };
      }
    }
    const controller = typeof AbortController === "function" ? new AbortController() : null;
    const timer = controller ? clock.setTimeout(() => controller.abort(), requestTimeoutMs) : null;
    try {
      const response = await fetchImpl(checkBalanceEndpoints(base, options.path)[which], {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        credentials: options.credentials ?? "omit",
        signal: controller?.signal ?? null,
      });
      /** @type {unknown} */
      let data = null;
      try {
        data = await response.json();
      } catch {
        data = null;
      }
      const fields = /** @type {Record<string, unknown>} */ (
        data && typeof data === "object" ? data : {}
      );
      if (response.ok) {
        return { ok: true, status: response.status, data: fields };
      }
      const code = typeof fields.code === "string" && fields.code ? fields.code : "unknown";
      const retryAfter =
        parseRetryAfter(response.headers.get("Retry-After"), clock.now()) ??
        FALLBACK_RETRY_SECONDS[code] ??
        null;
      return { ok: false, status: response.status, code, retryAfter };
    } catch {
      const retryAfter = FALLBACK_RETRY_SECONDS.network_error ?? null;
      return { ok: false, status: 0, code: "network_error", retryAfter };
    } finally {
      if (timer !== null) {
        clock.clearTimeout(timer);
      }
    }
  }

  /** @param {number | null} seconds */
  function blockApplyFor(seconds) {
    clock.clearTimeout(retryAtTimer);
    retryAtTimer = null;
    retryAt = null;
    if (!seconds) {
      return;
    }
    retryAt = clock.now() + seconds * 1000;
    retryAtTimer = clock.setTimeout(() => {
      retryAtTimer = null;
      retryAt = null;
      emit();
    }, seconds * 1000);
  }

  /** @param {CardRecord | null} except */
  function coveredByOthers(except) {
    let covered = 0;
    for (const card of records.values()) {
      if (card !== except) {
        covered += toCents(card.amountApplied) ?? 0;
      }
    }
    return covered;
  }

  /**
   * @param {CodeChange | undefined} change
   * @param {string} code
   * @returns {Promise<CodeChangeResult>}
   */
  async function changeCode(change, code) {
    if (!change) {
      return { ok: true };
    }
    try {
      const result = await change(code);
      return result && typeof result === "object" ? result : { ok: true };
    } catch (error) {
      return { ok: false, message: String(error) };
    }
  }

  /**
   * Take in a successful answer; when the code is new, put it into the checkout.
   * @param {CardRecord} card
   * @param {Record<string, string>} answer
   * @param {number} sizedForCents
   * @returns {Promise<boolean>} false when the checkout refused the code
   */
  async function accept(card, answer, sizedForCents) {
    const previousCode = card.inCheckout ? card.code : null;
    card.code = answer.shopifyGiftCardCode ?? card.code;
    card.lastCharacters = answer.shopifyGiftCardLastCharacters || card.code.slice(-4);
    card.viiCardNumber = answer.viiGiftCardNumber || card.viiCardNumber;
    card.amountApplied = answer.amountApplied ?? card.amountApplied;
    card.availableBalance = answer.availableBalance ?? card.availableBalance;
    card.viiBalance = answer.viiBalance ?? card.viiBalance;
    card.expiresAt = answer.expiresAt ?? card.expiresAt;
    card.applyToken = answer.applyToken || card.applyToken;
    card.sizedForCents = sizedForCents;
    card.pinNeededForCents = null;
    card.status = "applied";
    setCardMessage(card, null);
    if (!options.applyCode || previousCode === card.code) {
      return true;
    }
    if (previousCode) {
      // giftsync replaced the shadow card: the checkout swaps the old code for the new one.
      await changeCode(options.removeCode, previousCode);
      card.inCheckout = false;
      card.seenInCheckout = false;
    }
    const added = await changeCode(options.applyCode, card.code);
    if (added.ok) {
      card.inCheckout = true;
      // The checkout may list the code before applyGiftCardChange resolves.
      card.seenInCheckout = listedInCheckout.has(card.lastCharacters.toLowerCase());
      return true;
    }
    // Not in the checkout, so nothing may stay held for it.
    await releaseRecord(card, false);
    return false;
  }

  /**
   * @param {CardRecord} card
   * @param {boolean} takeOutOfCheckout
   * @returns {Promise<CallResult>}
   */
  async function releaseRecord(card, takeOutOfCheckout) {
    const result = await post("release", {
      checkoutToken: card.checkoutToken,
      shopifyGiftCardCode: card.code,
    });
    // 404: already released or expired; the checkout must drop it all the same.
    if (result.ok || result.status === 404) {
      records.delete(card.id);
      card.cardNumber = "";
      card.applyToken = undefined;
      if (takeOutOfCheckout && card.inCheckout) {
        await changeCode(options.removeCode, card.code);
      }
    }
    return result;
  }

  /**
   * One re-size call for one card.
   * @param {CardRecord} card
   * @param {number} shareCents
   * @param {string | null} pin
   * @returns {Promise<{retryAfter: number | null}>}
   */
  async function resizeCard(card, shareCents, pin) {
    /** @type {Record<string, unknown>} */
    const body = {
      viiCardNumber: card.cardNumber,
      cartTotal: fromCents(shareCents),
      checkoutToken: card.checkoutToken,
    };
    if (card.applyToken) {
      body.applyToken = card.applyToken;
    }
    if (pin) {
      body.viiCardPin = pin;
    }
    card.status = "updating";
    emit();
    const result = await post("checkBalance", body);
    if (!records.has(card.id)) {
      return { retryAfter: null };
    }
    if (result.ok) {
      if (isApplyAnswer(result.data)) {
        await accept(card, result.data, shareCents);
        return { retryAfter: null };
      }
      card.status = card.pinNeededForCents === null ? "applied" : "needs_pin";
      setCardMessage(card, "unexpected_answer");
      return { retryAfter: null };
    }
    if (result.code === "pin_required") {
      card.status = "needs_pin";
      card.pinNeededForCents = shareCents;
      setCardMessage(card, "pin_required");
      return { retryAfter: null };
    }
    card.status = card.pinNeededForCents === null ? "applied" : "needs_pin";
    setCardMessage(card, result.code, result.retryAfter);
    const again = ["busy", "vii_unavailable", "shopify_unavailable", "network_error"];
    return { retryAfter: again.includes(result.code) ? result.retryAfter : null };
  }

  /** Size every card to what is left of the total after the cards before it. */
  async function resizePass() {
    if (cartCents === null) {
      return;
    }
    /** @type {number | null} */
    let retryAfter = null;
    let covered = 0;
    for (const card of Array.from(records.values())) {
      if (!records.has(card.id) || card.status === "removing") {
        continue;
      }
      const share = cartCents - covered;
      // giftsync refuses a zero total: a card not needed any more keeps its amount, and
      // Shopify spends from it only what the order still needs (captured at close).
      const needsPinStill = card.pinNeededForCents !== null && share >= card.pinNeededForCents;
      if (share > 0 && share !== card.sizedForCents && !needsPinStill) {
        const outcome = await resizeCard(card, share, null);
        if (outcome.retryAfter !== null) {
          retryAfter = Math.max(retryAfter ?? 0, outcome.retryAfter);
        }
      }
      covered += records.has(card.id) ? toCents(card.amountApplied) ?? 0 : 0;
    }
    emit();
    if (retryAfter === null) {
      automaticRetries = 0;
      return;
    }
    if (automaticRetries < MAX_AUTOMATIC_RETRIES) {
      automaticRetries += 1;
      clock.clearTimeout(retryTimer);
      retryTimer = clock.setTimeout(() => {
        retryTimer = null;
        void requestResizePass();
      }, retryAfter * 1000);
    }
  }

  /** One pass runs for any number of requests made before it starts. */
  function requestResizePass() {
    if (disposed) {
      return Promise.resolve();
    }
    if (passQueued && queuedPass) {
      return queuedPass;
    }
    passQueued = true;
    queuedPass = enqueue(async () => {
      passQueued = false;
      await resizePass();
    });
    return queuedPass;
  }

  /**
   * @param {{cardNumber: string, pin: string}} entry
   * @returns {Promise<boolean>}
   */
  function apply(entry) {
    const cardNumber = digitsOnly(entry.cardNumber);
    const pin = digitsOnly(entry.pin);
    if (!CARD_NUMBER.test(cardNumber)) {
      setMessage("invalid_card_number");
      emit();
      return Promise.resolve(false);
    }
    if (!PIN.test(pin)) {
      setMessage("invalid_pin");
      emit();
      return Promise.resolve(false);
    }
    applying = true;
    setMessage(null);
    emit();
    return enqueue(async () => {
      try {
        // Looked up when the turn comes: an apply queued behind another for the same card
        // re-sizes that card instead of adding it twice.
        const existing = Array.from(records.values()).find((card) => card.cardNumber === cardNumber);
        return existing ? await resizeWithPin(existing, pin) : await applyNew(cardNumber, pin);
      } finally {
        applying = false;
        emit();
      }
    });
  }

  /**
   * @param {string} cardNumber
   * @param {string} pin
   * @returns {Promise<boolean>}
   */
  async function applyNew(cardNumber, pin) {
    if (disposed) {
      return false;
    }
    if (retryAt !== null && clock.now() < retryAt) {
      setMessage(messageCode ?? "too_many_attempts", Math.ceil((retryAt - clock.now()) / 1000));
      return false;
    }
    const checkoutToken = await resolveCheckoutToken();
    if (!checkoutToken) {
      setMessage("checkout_not_ready");
      return false;
    }
    if (cartCents === null || cartCents === 0) {
      setMessage(cartCents === 0 ? "already_covered" : "cart_total_unknown");
      return false;
    }
    const share = cartCents - coveredByOthers(null);
    if (share <= 0) {
      setMessage("already_covered");
      return false;
    }
    const result = await post("checkBalance", {
      viiCardNumber: cardNumber,
      viiCardPin: pin,
      cartTotal: fromCents(share),
      checkoutToken,
    });
    if (!result.ok) {
      setMessage(result.code, result.retryAfter);
      const waits = ["too_many_attempts", "busy", "vii_unavailable", "shopify_unavailable"];
      blockApplyFor(waits.includes(result.code) ? result.retryAfter : null);
      return false;
    }
    if (!isApplyAnswer(result.data)) {
      setMessage("unexpected_answer");
      return false;
    }
    blockApplyFor(null);
    /** @type {CardRecord} */
    const card = {
      id: nextId++,
      cardNumber,
      applyToken: undefined,
      checkoutToken,
      code: "",
      lastCharacters: "",
      viiCardNumber: `•••• ${cardNumber.slice(-4)}`,
      amountApplied: "0.00",
      availableBalance: "0.00",
      viiBalance: "0.00",
      expiresAt: "",
      sizedForCents: share,
      pinNeededForCents: null,
      inCheckout: false,
      seenInCheckout: false,
      status: "applied",
      message: null,
      messageCode: null,
    };
    records.set(card.id, card);
    if (!(await accept(card, result.data, share))) {
      records.delete(card.id);
      setMessage("checkout_refused");
      return false;
    }
    setMessage(null);
    // The total may have moved while this apply was in flight.
    if (cartCents !== null && cartCents - coveredByOthers(card) !== share) {
      void requestResizePass();
    }
    return true;
  }

  /**
   * Re-size one card with the shopper's PIN (after `pin_required`, or the same card typed
   * again). Runs in the queue.
   * @param {CardRecord} card
   * @param {string} pin
   * @returns {Promise<boolean>}
   */
  async function resizeWithPin(card, pin) {
    if (!records.has(card.id)) {
      return false;
    }
    if (cartCents === null) {
      setCardMessage(card, "cart_total_unknown");
      return false;
    }
    const share = cartCents - coveredByOthers(card);
    if (share <= 0) {
      setCardMessage(card, "already_covered");
      return false;
    }
    await resizeCard(card, share, pin);
    return card.status === "applied" && card.messageCode === null;
  }

  /**
   * @param {number} cardId
   * @param {string} pin
   * @returns {Promise<boolean>}
   */
  function providePin(cardId, pin) {
    const digits = digitsOnly(pin);
    const card = records.get(cardId);
    if (!card) {
      return Promise.resolve(false);
    }
    if (!PIN.test(digits)) {
      setCardMessage(card, "invalid_pin");
      emit();
      return Promise.resolve(false);
    }
    return enqueue(async () => {
      const done = await resizeWithPin(card, digits);
      emit();
      return done;
    });
  }

  /**
   * @param {string | number} total
   */
  function setCartTotal(total) {
    if (disposed) {
      return;
    }
    const cents = typeof total === "number" ? centsFromNumber(total) : toCents(total);
    if (cents === null || cents === cartCents) {
      return;
    }
    cartCents = cents;
    emit();
    if (records.size === 0) {
      return;
    }
    clock.clearTimeout(resizeTimer);
    resizeTimer = clock.setTimeout(() => {
      resizeTimer = null;
      void requestResizePass();
    }, resizeDelayMs);
  }

  /**
   * The shopper removes a card here: release it, take it out of the checkout, let the
   * other cards cover what it covered.
   * @param {number} cardId
   * @returns {Promise<boolean>}
   */
  function remove(cardId) {
    const card = records.get(cardId);
    if (!card) {
      return Promise.resolve(true);
    }
    card.status = "removing";
    emit();
    return enqueue(async () => {
      if (!records.has(cardId)) {
        return true;
      }
      const result = await releaseRecord(card, true);
      if (!result.ok && result.status !== 404) {
        card.status = card.pinNeededForCents === null ? "applied" : "needs_pin";
        setCardMessage(card, result.code, result.retryAfter);
        emit();
        return false;
      }
      emit();
      void requestResizePass();
      return true;
    });
  }

  /**
   * The checkout's list of applied gift cards (last characters) changed: a card of ours
   * that was listed and is gone was removed by the shopper in Shopify's own UI.
   * @param {readonly string[]} lastCharacters
   */
  function syncAppliedCodes(lastCharacters) {
    const listed = new Set(lastCharacters.map((chars) => chars.toLowerCase()));
    listedInCheckout = listed;
    for (const card of records.values()) {
      if (!card.inCheckout || card.status === "removing") {
        continue;
      }
      if (listed.has(card.lastCharacters.toLowerCase())) {
        card.seenInCheckout = true;
      } else if (card.seenInCheckout) {
        card.inCheckout = false;
        card.status = "removing";
        void enqueue(async () => {
          const result = await releaseRecord(card, false);
          if (!result.ok && result.status !== 404) {
            // It is out of the checkout; giftsync closes it at expiry if this never lands.
            records.delete(card.id);
          }
          emit();
          void requestResizePass();
        });
      }
    }
    emit();
  }

  async function whenIdle() {
    let seen;
    do {
      seen = tail;
      await seen;
    } while (seen !== tail);
  }

  function dispose() {
    disposed = true;
    for (const timer of [resizeTimer, retryTimer, retryAtTimer]) {
      clock.clearTimeout(timer);
    }
    for (const card of records.values()) {
      card.cardNumber = "";
      card.applyToken = undefined;
    }
    listeners.clear();
  }

  return {
    getState,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    apply,
    providePin,
    setCartTotal,
    remove,
    syncAppliedCodes,
    whenIdle,
    dispose,
  };
}
