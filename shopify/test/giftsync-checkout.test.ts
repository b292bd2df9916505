import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  MESSAGES,
  centsFromNumber,
  checkBalanceEndpoints,
  createGiftCardSession,
  describeWait,
  fromCents,
  messageFor,
  normalizeBaseUrl,
  parseRetryAfter,
  toCents,
  tokenForGiftsync,
  type SessionOptions,
} from '../lib/giftsync-checkout.js';
import {
  CARD,
  FetchStub,
  ManualClock,
  NO_ANSWER,
  OTHER_CARD,
  PIN,
  applied,
  problem,
  released,
} from './support';

const BASE = 'https://giftsync.example.com';
const TOKEN = 'c1f0e8d2a4b6';

function setup(overrides: Partial<SessionOptions> = {}) {
  const stub = new FetchStub();
  const clock = new ManualClock();
  const applies: string[] = [];
  const removes: string[] = [];
  const session = createGiftCardSession({
    baseUrl: BASE,
    checkoutToken: TOKEN,
    fetch: stub.fetch,
    clock,
    resizeDelayMs: 400,
    applyCode: (code) => {
      applies.push(code);
      return { ok: true };
    },
    removeCode: (code) => {
      removes.push(code);
      return { ok: true };
    },
    ...overrides,
  });
  session.setCartTotal('80.00');
  return { stub, clock, session, applies, removes };
}

async function applyOne(ctx: ReturnType<typeof setup>, answer = applied()) {
  ctx.stub.reply(answer);
  assert.equal(await ctx.session.apply({ cardNumber: CARD, pin: PIN }), true);
}

describe('money and helpers', () => {
  test('decimal strings become integer cents and back', () => {
    assert.equal(toCents('80.00'), 8000);
    assert.equal(toCents('12.5'), 1250);
    assert.equal(toCents('7'), 700);
    assert.equal(toCents(' 0.01 '), 1);
    assert.equal(toCents('1.005'), null);
    assert.equal(toCents('-1.00'), null);
    assert.equal(toCents('NaN'), null);
    assert.equal(toCents('1e3'), null);
    assert.equal(fromCents(8000), '80.00');
    assert.equal(fromCents(5), '0.05');
    assert.equal(fromCents(123456789), '1234567.89');
  });

  test("Shopify's Money.amount numbers round to the cent they mean", () => {
    assert.equal(centsFromNumber(19.99), 1999);
    assert.equal(centsFromNumber(0.1 + 0.2), 30);
    assert.equal(centsFromNumber(1234.56), 123456);
    assert.equal(centsFromNumber(-1), null);
    assert.equal(centsFromNumber(Number.NaN), null);
  });

  test('Retry-After is read as seconds or as an HTTP date', () => {
    const now = Date.UTC(2026, 11, 1, 12, 0, 0);
    assert.equal(parseRetryAfter('30', now), 30);
    assert.equal(parseRetryAfter(' 2 ', now), 2);
    assert.equal(parseRetryAfter('Tue, 01 Dec 2026 12:01:30 GMT', now), 90);
    assert.equal(parseRetryAfter('Tue, 01 Dec 2026 11:00:00 GMT', now), 0);
    assert.equal(parseRetryAfter('soon', now), null);
    assert.equal(parseRetryAfter(null, now), null);
  });

  test('waits are said in words, rounded up', () => {
    assert.equal(describeWait(1), '1 second');
    assert.equal(describeWait(30), '30 seconds');
    assert.equal(describeWait(60), '1 minute');
    assert.equal(describeWait(61), '2 minutes');
    assert.equal(describeWait(900), '15 minutes');
    assert.equal(describeWait(7200), '2 hours');
  });

  test('endpoints under a base URL or the app proxy path', () => {
    assert.deepEqual(checkBalanceEndpoints('https://g.example/', '/check-balance'), {
      checkBalance: 'https://g.example/check-balance',
      release: 'https://g.example/check-balance/release',
    });
    assert.deepEqual(checkBalanceEndpoints('', '/apps/giftsync/check-balance'), {
      checkBalance: '/apps/giftsync/check-balance',
      release: '/apps/giftsync/check-balance/release',
    });
  });

  test('the merchant-typed address must be HTTPS (plain HTTP only to this machine)', () => {
    assert.equal(normalizeBaseUrl('https://giftsync.example.com/'), 'https://giftsync.example.com');
    assert.equal(normalizeBaseUrl(' https://g.example/base/ '), 'https://g.example/base');
    assert.equal(normalizeBaseUrl('http://127.0.0.1:8000'), 'http://127.0.0.1:8000');
    assert.equal(normalizeBaseUrl('http://giftsync.example.com'), null);
    assert.equal(normalizeBaseUrl('https://g.example/?x=1'), null);
    assert.equal(normalizeBaseUrl('https://user:pw@g.example'), null);
    assert.equal(normalizeBaseUrl('giftsync.example.com'), null);
    assert.equal(normalizeBaseUrl(''), null);
    assert.equal(normalizeBaseUrl(undefined), null);
  });

  test('a token giftsync would refuse (a cart token with ?key=) is sent as its digest', async () => {
    assert.equal(await tokenForGiftsync('c1-7a2abe82733a34e84aa472d57fb5c3c1'), 'c1-7a2abe82733a34e84aa472d57fb5c3c1');
    const hashed = await tokenForGiftsync('c1-7a2abe82733a34e84aa472d57fb5c3c1?key=824bdj25mhg1242bdb385');
    // sha256 of that exact string; stable, so every call for the cart uses the same token
    assert.equal(
      hashed,
      'sha256-' + (await sha256Hex('c1-7a2abe82733a34e84aa472d57fb5c3c1?key=824bdj25mhg1242bdb385')),
    );
    assert.equal(hashed?.length, 71);
    assert.equal(await tokenForGiftsync(''), undefined);
    assert.equal(await tokenForGiftsync(undefined), undefined);
  });
});

async function sha256Hex(text: string): Promise<string> {
  const { createHash } = await import('node:crypto');
  return createHash('sha256').update(text).digest('hex');
}

describe('messages', () => {
  test('every problem code has its own sentence', () => {
    const expected: Record<string, string> = {
      invalid_request:
        'Check the card number (12 to 19 digits) and the PIN (4 to 8 digits), then try again.',
      card_empty: 'This gift card has no balance left.',
      invalid_card_or_pin: 'The card number or PIN is not right.',
      card_not_active:
        "This gift card can't be used yet or has been cancelled. Please contact the store.",
      pin_required: 'Enter your PIN to apply more of your gift card.',
      card_locked:
        'This gift card is locked after too many wrong PINs. Please contact the store to unlock it.',
      too_many_attempts: 'Too many tries. Please wait 15 minutes before trying again.',
      busy: 'Your gift card is still being updated. Please try again in 2 seconds.',
      vii_unavailable:
        "The gift card service isn't answering right now. Please try again in 30 seconds.",
      shopify_unavailable:
        "The store couldn't prepare your gift card right now. Please try again in 30 seconds.",
      invalid_session_token: 'Your checkout session has expired. Refresh the page and try again.',
      invalid_proxy_signature:
        "The store couldn't verify this request. Refresh the page and try again.",
      not_found: 'This gift card is no longer applied to your order.',
    };
    const waits: Record<string, number> = {
      too_many_attempts: 900,
      busy: 2,
      vii_unavailable: 30,
      shopify_unavailable: 30,
    };
    for (const [code, sentence] of Object.entries(expected)) {
      assert.equal(messageFor(code, waits[code] ?? null), sentence, code);
    }
    assert.equal(messageFor('too_many_attempts'), 'Too many tries. Please wait a while before trying again.');
    assert.equal(messageFor('vii_unavailable'), "The gift card service isn't answering right now. Please try again in a moment.");
    assert.equal(messageFor('something_new'), MESSAGES.unknown(null));
  });

  for (const [status, code, retryAfter, wait] of [
    [422, 'invalid_request', undefined, null],
    [402, 'card_empty', undefined, null],
    [403, 'invalid_card_or_pin', undefined, null],
    [409, 'card_not_active', undefined, null],
    [423, 'card_locked', undefined, null],
    [429, 'too_many_attempts', '900', 900],
    [429, 'busy', '3', 3],
    [503, 'vii_unavailable', '60', 60],
    [503, 'shopify_unavailable', '45', 45],
    [401, 'invalid_session_token', undefined, null],
    [401, 'invalid_proxy_signature', undefined, null],
    [404, 'not_found', undefined, null],
  ] as const) {
    test(`an apply answered ${status} ${code} shows its sentence and keeps nothing`, async () => {
      const ctx = setup();
      ctx.stub.reply(problem(status, code, retryAfter));
      assert.equal(await ctx.session.apply({ cardNumber: CARD, pin: PIN }), false);
      const state = ctx.session.getState();
      assert.equal(state.message, messageFor(code, wait));
      assert.equal(state.messageCode, code);
      assert.deepEqual(state.cards, []);
      assert.deepEqual(ctx.applies, []);
    });
  }

  test('an unreachable service and an unknown code get their own sentences', async () => {
    const ctx = setup();
    ctx.stub.reply(new TypeError('Failed to fetch'), { status: 500, body: { oops: true } });
    await ctx.session.apply({ cardNumber: CARD, pin: PIN });
    assert.equal(ctx.session.getState().message, MESSAGES.network_error(null));
    await ctx.session.apply({ cardNumber: CARD, pin: PIN });
    assert.equal(ctx.session.getState().message, MESSAGES.unknown(null));
  });
});

describe('apply', () => {
  test('sends the card, PIN, total and checkout token with a fresh session token', async () => {
    let issued = 0;
    const ctx = setup({
      sessionToken: async () => `session-${++issued}`,
    });
    await applyOne(ctx);
    assert.equal(ctx.stub.calls.length, 1);
    const call = ctx.stub.calls[0]!;
    assert.equal(call.url, 'https://giftsync.example.com/check-balance');
    assert.equal(call.method, 'POST');
    assert.equal(call.credentials, 'omit');
    assert.deepEqual(call.body, {
      viiCardNumber: CARD,
      viiCardPin: PIN,
      cartTotal: '80.00',
      checkoutToken: TOKEN,
    });
    assert.equal(call.headers['authorization'], 'Bearer session-1');
    assert.equal(call.headers['content-type'], 'application/json');
    assert.deepEqual(ctx.applies, ['k3v9q2m7x1c47890']);
    assert.deepEqual(ctx.session.getState(), {
      cards: [
        {
          id: 1,
          code: 'k3v9q2m7x1c47890',
          lastCharacters: '7890',
          viiCardNumber: '•••• 7890',
          amountApplied: '50.00',
          availableBalance: '0.00',
          viiBalance: '50.00',
          expiresAt: '2026-12-02T12:00:00Z',
          status: 'applied',
          message: null,
          messageCode: null,
        },
      ],
      applying: false,
      message: null,
      messageCode: null,
      retryAt: null,
      cartTotal: '80.00',
    });
  });

  test('the card number, PIN and apply token never reach the view state', async () => {
    const ctx = setup();
    await applyOne(ctx);
    const seen = JSON.stringify(ctx.session.getState());
    assert.equal(seen.includes(CARD), false);
    assert.equal(seen.includes(CARD.slice(0, 12)), false);
    assert.equal(seen.includes('apply-token-1'), false);
    assert.equal(seen.includes(`"${PIN}"`), false);
  });

  test('spaces and dashes are allowed in what the shopper types', async () => {
    const ctx = setup();
    ctx.stub.reply(applied());
    await ctx.session.apply({ cardNumber: '6280 0012-3456 7890', pin: ' 1234 ' });
    assert.equal(ctx.stub.calls[0]!.body.viiCardNumber, CARD);
    assert.equal(ctx.stub.calls[0]!.body.viiCardPin, PIN);
  });

  test('a number or PIN of the wrong shape is refused before any call', async () => {
    const ctx = setup();
    assert.equal(await ctx.session.apply({ cardNumber: '12345', pin: PIN }), false);
    assert.equal(ctx.session.getState().message, 'Enter the 12 to 19 digit number printed on your card.');
    assert.equal(await ctx.session.apply({ cardNumber: CARD, pin: '12' }), false);
    assert.equal(ctx.session.getState().message, 'Enter the 4 to 8 digit PIN of your card.');
    assert.equal(ctx.stub.calls.length, 0);
  });

  test('without a checkout token or a base URL nothing is sent', async () => {
    const noToken = setup({ checkoutToken: () => undefined });
    assert.equal(await noToken.session.apply({ cardNumber: CARD, pin: PIN }), false);
    assert.equal(noToken.session.getState().messageCode, 'checkout_not_ready');
    const noBase = setup({ baseUrl: () => null });
    assert.equal(await noBase.session.apply({ cardNumber: CARD, pin: PIN }), false);
    assert.equal(noBase.session.getState().messageCode, 'not_configured');
    assert.equal(noToken.stub.calls.length + noBase.stub.calls.length, 0);
  });

  test('a checkout that refuses the code gets the hold released at once', async () => {
    const stub = new FetchStub();
    const session = createGiftCardSession({
      baseUrl: BASE,
      checkoutToken: TOKEN,
      fetch: stub.fetch,
      clock: new ManualClock(),
      applyCode: () => ({ ok: false, message: 'accelerated checkout' }),
    });
    session.setCartTotal('80.00');
    stub.reply(applied(), released);
    assert.equal(await session.apply({ cardNumber: CARD, pin: PIN }), false);
    assert.equal(stub.calls.length, 2);
    assert.equal(stub.calls[1]!.url, 'https://giftsync.example.com/check-balance/release');
    assert.deepEqual(stub.calls[1]!.body, {
      checkoutToken: TOKEN,
      shopifyGiftCardCode: 'k3v9q2m7x1c47890',
    });
    assert.deepEqual(session.getState().cards, []);
    assert.equal(
      session.getState().message,
      "Checkout didn't accept the gift card (express checkouts such as Apple Pay can't use it). Your card was not charged.",
    );
  });

  test('the same card applied twice in a row is one card, re-sized with the PIN', async () => {
    const ctx = setup();
    ctx.stub.reply(applied(), applied({ applyToken: 'apply-token-2' }));
    const [first, second] = await Promise.all([
      ctx.session.apply({ cardNumber: CARD, pin: PIN }),
      ctx.session.apply({ cardNumber: CARD, pin: PIN }),
    ]);
    assert.deepEqual([first, second], [true, true]);
    assert.equal(ctx.session.getState().cards.length, 1);
    assert.deepEqual(ctx.stub.calls[1]!.body, {
      viiCardNumber: CARD,
      viiCardPin: PIN,
      cartTotal: '80.00',
      checkoutToken: TOKEN,
      applyToken: 'apply-token-1',
    });
    assert.deepEqual(ctx.applies, ['k3v9q2m7x1c47890']);
  });

  test('a second card covers only what the first leaves', async () => {
    const ctx = setup();
    await applyOne(ctx);
    ctx.stub.reply(
      applied({
        shopifyGiftCardCode: 'p8r2t6w1z5b43210',
        shopifyGiftCardLastCharacters: '3210',
        viiGiftCardNumber: '•••• 3210',
        amountApplied: '30.00',
        availableBalance: '70.00',
        viiBalance: '100.00',
        applyToken: 'apply-token-b',
      }),
    );
    assert.equal(await ctx.session.apply({ cardNumber: OTHER_CARD, pin: '4321' }), true);
    assert.equal(ctx.stub.calls[1]!.body.cartTotal, '30.00');
    assert.deepEqual(
      ctx.session.getState().cards.map((card) => [card.lastCharacters, card.amountApplied]),
      [
        ['7890', '50.00'],
        ['3210', '30.00'],
      ],
    );
    assert.equal(await ctx.session.apply({ cardNumber: '6280005555555555', pin: PIN }), false);
    assert.equal(ctx.session.getState().message, 'Your gift cards already cover this order.');
    assert.equal(ctx.stub.calls.length, 2);
  });

  test('after too_many_attempts the form waits out Retry-After', async () => {
    const ctx = setup();
    ctx.stub.reply(problem(429, 'too_many_attempts', '900'));
    await ctx.session.apply({ cardNumber: CARD, pin: '9999' });
    assert.equal(ctx.session.getState().retryAt, ctx.clock.nowMs + 900_000);
    assert.equal(
      ctx.session.getState().message,
      'Too many tries. Please wait 15 minutes before trying again.',
    );
    ctx.clock.advance(600_000);
    assert.equal(await ctx.session.apply({ cardNumber: CARD, pin: PIN }), false);
    assert.equal(ctx.stub.calls.length, 1);
    assert.equal(
      ctx.session.getState().message,
      'Too many tries. Please wait 5 minutes before trying again.',
    );
    ctx.clock.advance(300_000);
    assert.equal(ctx.session.getState().retryAt, null);
    await applyOne(ctx);
    assert.equal(ctx.stub.calls.length, 2);
  });

  test('a hidden Retry-After (cross-origin) falls back to a short wait for busy', async () => {
    const ctx = setup();
    ctx.stub.reply(problem(429, 'busy'));
    await ctx.session.apply({ cardNumber: CARD, pin: PIN });
    assert.equal(ctx.session.getState().retryAt, ctx.clock.nowMs + 2000);
    assert.equal(
      ctx.session.getState().message,
      'Your gift card is still being updated. Please try again in 2 seconds.',
    );
  });

  test('a request that never answers is given up after the timeout', async () => {
    const ctx = setup({ requestTimeoutMs: 15_000 });
    ctx.stub.reply(NO_ANSWER);
    const result = ctx.session.apply({ cardNumber: CARD, pin: PIN });
    await new Promise((resolve) => setImmediate(resolve));
    ctx.clock.advance(14_999);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(ctx.session.getState().applying, true);
    ctx.clock.advance(1);
    assert.equal(await result, false);
    assert.equal(ctx.session.getState().messageCode, 'network_error');
  });
});

describe('re-size', () => {
  test('a total change re-sizes after a quiet period, with the apply token and no PIN', async () => {
    const ctx = setup();
    await applyOne(ctx, applied({ amountApplied: '80.00', availableBalance: '40.00', viiBalance: '120.00' }));
    ctx.session.setCartTotal('60.00');
    ctx.session.setCartTotal('55.00');
    ctx.session.setCartTotal('50.00');
    ctx.clock.advance(399);
    await ctx.session.whenIdle();
    assert.equal(ctx.stub.calls.length, 1);
    ctx.stub.reply(applied({ amountApplied: '50.00', availableBalance: '40.00', applyToken: 'apply-token-2' }));
    ctx.clock.advance(1);
    await ctx.session.whenIdle();
    assert.equal(ctx.stub.calls.length, 2);
    assert.deepEqual(ctx.stub.calls[1]!.body, {
      viiCardNumber: CARD,
      cartTotal: '50.00',
      checkoutToken: TOKEN,
      applyToken: 'apply-token-1',
    });
    assert.equal(ctx.session.getState().cards[0]!.amountApplied, '50.00');
    assert.deepEqual(ctx.applies, ['k3v9q2m7x1c47890']);
    // The newest token is the one sent next time.
    ctx.stub.reply(applied({ amountApplied: '45.00' }));
    ctx.session.setCartTotal('45.00');
    ctx.clock.advance(400);
    await ctx.session.whenIdle();
    assert.equal(ctx.stub.calls[2]!.body.applyToken, 'apply-token-2');
  });

  test('changes during a re-size make exactly one more call, never two at once', async () => {
    const ctx = setup();
    await applyOne(ctx, applied({ amountApplied: '80.00' }));
    const held = ctx.stub.hold();
    ctx.session.setCartTotal('70.00');
    ctx.clock.advance(400);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(ctx.stub.calls.length, 2);
    for (const total of ['65.00', '62.00', '61.00']) {
      ctx.session.setCartTotal(total);
      ctx.clock.advance(400);
    }
    ctx.stub.reply(applied({ amountApplied: '61.00' }));
    held.release(applied({ amountApplied: '70.00' }));
    await ctx.session.whenIdle();
    assert.equal(ctx.stub.calls.length, 3);
    assert.equal(ctx.stub.calls[2]!.body.cartTotal, '61.00');
    assert.equal(ctx.stub.maxInFlight, 1);
    assert.equal(ctx.session.getState().cards[0]!.amountApplied, '61.00');
  });

  test('the same total again makes no call', async () => {
    const ctx = setup();
    await applyOne(ctx);
    ctx.session.setCartTotal('80.00');
    ctx.session.setCartTotal(80);
    ctx.clock.advance(1000);
    await ctx.session.whenIdle();
    assert.equal(ctx.stub.calls.length, 1);
  });

  test('pin_required asks for the PIN; the PIN re-sizes with the apply token', async () => {
    const ctx = setup();
    await applyOne(ctx, applied({ amountApplied: '80.00', availableBalance: '40.00' }));
    ctx.stub.reply(problem(409, 'pin_required'));
    ctx.session.setCartTotal('100.00');
    ctx.clock.advance(400);
    await ctx.session.whenIdle();
    const waiting = ctx.session.getState().cards[0]!;
    assert.equal(waiting.status, 'needs_pin');
    assert.equal(waiting.message, 'Enter your PIN to apply more of your gift card.');
    assert.equal(waiting.amountApplied, '80.00');
    // Growing further still needs the PIN: no call until the shopper gives it.
    ctx.session.setCartTotal('110.00');
    ctx.clock.advance(400);
    await ctx.session.whenIdle();
    assert.equal(ctx.stub.calls.length, 2);
    ctx.stub.reply(applied({ amountApplied: '110.00', availableBalance: '10.00' }));
    assert.equal(await ctx.session.providePin(waiting.id, PIN), true);
    assert.deepEqual(ctx.stub.calls[2]!.body, {
      viiCardNumber: CARD,
      cartTotal: '110.00',
      checkoutToken: TOKEN,
      applyToken: 'apply-token-1',
      viiCardPin: PIN,
    });
    assert.equal(ctx.session.getState().cards[0]!.status, 'applied');
  });

  test('a wrong PIN on re-size keeps the card and says so', async () => {
    const ctx = setup();
    await applyOne(ctx, applied({ amountApplied: '80.00' }));
    ctx.stub.reply(problem(409, 'pin_required'), problem(403, 'invalid_card_or_pin'));
    ctx.session.setCartTotal('100.00');
    ctx.clock.advance(400);
    await ctx.session.whenIdle();
    const card = ctx.session.getState().cards[0]!;
    assert.equal(await ctx.session.providePin(card.id, '9999'), false);
    const after = ctx.session.getState().cards[0]!;
    assert.equal(after.status, 'needs_pin');
    assert.equal(after.message, 'The card number or PIN is not right.');
    assert.equal(after.amountApplied, '80.00');
  });

  test('a busy or unreachable service is retried after Retry-After, a few times at most', async () => {
    const ctx = setup();
    await applyOne(ctx, applied({ amountApplied: '80.00' }));
    ctx.stub.reply(problem(429, 'busy', '3'));
    ctx.session.setCartTotal('60.00');
    ctx.clock.advance(400);
    await ctx.session.whenIdle();
    assert.equal(
      ctx.session.getState().cards[0]!.message,
      'Your gift card is still being updated. Please try again in 3 seconds.',
    );
    ctx.clock.advance(2999);
    await ctx.session.whenIdle();
    assert.equal(ctx.stub.calls.length, 2);
    ctx.stub.reply(problem(503, 'vii_unavailable', '60'), problem(503, 'vii_unavailable', '60'), problem(503, 'vii_unavailable', '60'));
    for (let attempt = 0; attempt < 3; attempt += 1) {
      ctx.clock.advance(attempt === 0 ? 1 : 60_000);
      await ctx.session.whenIdle();
    }
    assert.equal(ctx.stub.calls.length, 5);
    // Three automatic retries are spent; the card keeps its amount and its message.
    ctx.clock.advance(600_000);
    await ctx.session.whenIdle();
    assert.equal(ctx.stub.calls.length, 5);
    assert.equal(ctx.session.getState().cards[0]!.amountApplied, '80.00');
    assert.equal(
      ctx.session.getState().cards[0]!.message,
      "The gift card service isn't answering right now. Please try again in 1 minute.",
    );
    // The next change starts afresh.
    ctx.stub.reply(applied({ amountApplied: '55.00' }));
    ctx.session.setCartTotal('55.00');
    ctx.clock.advance(400);
    await ctx.session.whenIdle();
    assert.equal(ctx.session.getState().cards[0]!.amountApplied, '55.00');
    assert.equal(ctx.session.getState().cards[0]!.message, null);
  });

  test('cards are re-sized in the order applied, each to what the ones before leave', async () => {
    const ctx = setup();
    await applyOne(ctx);
    ctx.stub.reply(
      applied({
        shopifyGiftCardCode: 'p8r2t6w1z5b43210',
        shopifyGiftCardLastCharacters: '3210',
        amountApplied: '30.00',
        applyToken: 'apply-token-b',
      }),
    );
    await ctx.session.apply({ cardNumber: OTHER_CARD, pin: '4321' });
    ctx.stub.reply(applied({ amountApplied: '50.00' }), applied({
      shopifyGiftCardCode: 'p8r2t6w1z5b43210',
      shopifyGiftCardLastCharacters: '3210',
      amountApplied: '20.00',
    }));
    ctx.session.setCartTotal('70.00');
    ctx.clock.advance(400);
    await ctx.session.whenIdle();
    // The first card already gave all it holds (50.00 of 80.00 asked): it is asked again
    // for 70.00, then the second for the 20.00 left.
    assert.deepEqual(
      ctx.stub.calls.slice(2).map((call) => [call.body.viiCardNumber, call.body.cartTotal]),
      [
        [CARD, '70.00'],
        [OTHER_CARD, '20.00'],
      ],
    );
  });

  test('a re-size that replaces the shadow card swaps the codes in the checkout', async () => {
    const ctx = setup();
    await applyOne(ctx);
    ctx.stub.reply(applied({ shopifyGiftCardCode: 'n4w8e2r6t0y47890', amountApplied: '60.00' }));
    ctx.session.setCartTotal('60.00');
    ctx.clock.advance(400);
    await ctx.session.whenIdle();
    assert.deepEqual(ctx.removes, ['k3v9q2m7x1c47890']);
    assert.deepEqual(ctx.applies, ['k3v9q2m7x1c47890', 'n4w8e2r6t0y47890']);
  });
});

describe('release', () => {
  test('removing a card releases it, takes it out of the checkout and lets others grow', async () => {
    const ctx = setup();
    await applyOne(ctx);
    ctx.stub.reply(
      applied({ shopifyGiftCardCode: 'p8r2t6w1z5b43210', shopifyGiftCardLastCharacters: '3210', amountApplied: '30.00', applyToken: 'apply-token-b' }),
    );
    await ctx.session.apply({ cardNumber: OTHER_CARD, pin: '4321' });
    const first = ctx.session.getState().cards[0]!;
    ctx.stub.reply(released, applied({ shopifyGiftCardCode: 'p8r2t6w1z5b43210', shopifyGiftCardLastCharacters: '3210', amountApplied: '80.00' }));
    assert.equal(await ctx.session.remove(first.id), true);
    await ctx.session.whenIdle();
    assert.deepEqual(ctx.stub.calls[2]!.body, {
      checkoutToken: TOKEN,
      shopifyGiftCardCode: 'k3v9q2m7x1c47890',
    });
    assert.equal(ctx.stub.calls[2]!.url, 'https://giftsync.example.com/check-balance/release');
    assert.deepEqual(ctx.removes, ['k3v9q2m7x1c47890']);
    assert.deepEqual(ctx.stub.calls[3]!.body, {
      viiCardNumber: OTHER_CARD,
      cartTotal: '80.00',
      checkoutToken: TOKEN,
      applyToken: 'apply-token-b',
    });
    assert.deepEqual(
      ctx.session.getState().cards.map((card) => [card.lastCharacters, card.amountApplied]),
      [['3210', '80.00']],
    );
  });

  test('an unknown card (404) is dropped all the same; a failure keeps it', async () => {
    const ctx = setup();
    await applyOne(ctx);
    const card = ctx.session.getState().cards[0]!;
    ctx.stub.reply(problem(503, 'shopify_unavailable', '30'));
    assert.equal(await ctx.session.remove(card.id), false);
    const kept = ctx.session.getState().cards[0]!;
    assert.equal(kept.status, 'applied');
    assert.equal(kept.message, "The store couldn't prepare your gift card right now. Please try again in 30 seconds.");
    assert.deepEqual(ctx.removes, []);
    ctx.stub.reply(problem(404, 'not_found'));
    assert.equal(await ctx.session.remove(card.id), true);
    assert.deepEqual(ctx.session.getState().cards, []);
    assert.deepEqual(ctx.removes, ['k3v9q2m7x1c47890']);
  });

  test('a card the shopper removes in Shopify’s own field is released, not removed again', async () => {
    const ctx = setup();
    await applyOne(ctx);
    ctx.session.syncAppliedCodes(['7890']);
    ctx.session.syncAppliedCodes(['abcd']);
    assert.equal(ctx.session.getState().cards[0]!.status, 'removing');
    ctx.stub.reply(released);
    await ctx.session.whenIdle();
    assert.deepEqual(ctx.stub.calls[1]!.body, {
      checkoutToken: TOKEN,
      shopifyGiftCardCode: 'k3v9q2m7x1c47890',
    });
    assert.deepEqual(ctx.removes, []);
    assert.deepEqual(ctx.session.getState().cards, []);
  });

  test('a card not yet listed by the checkout is not taken for removed', async () => {
    const ctx = setup();
    await applyOne(ctx);
    ctx.session.syncAppliedCodes([]);
    await ctx.session.whenIdle();
    assert.equal(ctx.stub.calls.length, 1);
    assert.equal(ctx.session.getState().cards[0]!.status, 'applied');
  });

  test('re-sizes and releases keep the token the card was applied under', async () => {
    let token = 'cart-one';
    const ctx = setup({ checkoutToken: () => token });
    await applyOne(ctx);
    token = 'cart-two';
    ctx.stub.reply(applied({ amountApplied: '40.00' }), released);
    ctx.session.setCartTotal('40.00');
    ctx.clock.advance(400);
    await ctx.session.whenIdle();
    await ctx.session.remove(ctx.session.getState().cards[0]!.id);
    assert.deepEqual(
      ctx.stub.calls.map((call) => call.body.checkoutToken),
      ['cart-one', 'cart-one', 'cart-one'],
    );
  });

  test('dispose forgets the card numbers and stops timers', async () => {
    const ctx = setup();
    await applyOne(ctx);
    ctx.session.setCartTotal('10.00');
    ctx.session.dispose();
    ctx.clock.advance(10_000);
    await ctx.session.whenIdle();
    assert.equal(ctx.stub.calls.length, 1);
  });
});
