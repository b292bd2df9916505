/**
 * The checkout UI extension against a stand-in for Shopify's `shopify` global: the binding
 * (session token, applyGiftCardChange, cost and applied gift cards, settings) with a manual
 * clock, and the real entry point rendered by Preact into a DOM.
 */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Window } from 'happy-dom';
import { render } from 'preact';

import extension, { ViiGiftCards } from '../extensions/vii-checkout/src/Checkout';
import { bindCheckout } from '../extensions/vii-checkout/src/binding';
import { CARD, FetchStub, ManualClock, PIN, applied, fakeShopify, problem, released } from './support';

const CODE = 'k3v9q2m7x1c47890';

function bound(options: { giftsyncUrl?: string; editor?: boolean } = {}) {
  const shopify = fakeShopify(options);
  const stub = new FetchStub();
  const clock = new ManualClock();
  const binding = bindCheckout(shopify.api, { fetch: stub.fetch, clock, resizeDelayMs: 400 });
  return { shopify, stub, clock, binding, session: binding.session };
}

describe('binding to the checkout API', () => {
  test('apply calls giftsync from the setting with a session token and adds the code', async () => {
    const { shopify, stub, session } = bound();
    stub.reply(applied());
    assert.equal(await session.apply({ cardNumber: CARD, pin: PIN }), true);
    assert.equal(stub.calls[0]!.url, 'https://giftsync.example.com/check-balance');
    assert.equal(stub.calls[0]!.headers['authorization'], 'Bearer session-token-1');
    assert.deepEqual(stub.calls[0]!.body, {
      viiCardNumber: CARD,
      viiCardPin: PIN,
      cartTotal: '80.00',
      checkoutToken: 'c1f0e8d2a4b6',
    });
    assert.deepEqual(shopify.giftCardChanges, [{ type: 'addGiftCard', code: CODE }]);
    assert.deepEqual(
      shopify.appliedGiftCards.value.map((card) => card.lastCharacters),
      ['7890'],
    );
  });

  test('a change of cost.totalAmount re-sizes with the apply token and a new session token', async () => {
    const { shopify, stub, clock, session } = bound();
    stub.reply(applied({ amountApplied: '80.00', availableBalance: '40.00' }));
    await session.apply({ cardNumber: CARD, pin: PIN });
    stub.reply(applied({ amountApplied: '60.50', availableBalance: '40.00' }));
    shopify.totalAmount.value = { amount: 60.5, currencyCode: 'USD' };
    clock.advance(400);
    await session.whenIdle();
    assert.deepEqual(stub.calls[1]!.body, {
      viiCardNumber: CARD,
      cartTotal: '60.50',
      checkoutToken: 'c1f0e8d2a4b6',
      applyToken: 'apply-token-1',
    });
    assert.equal(stub.calls[1]!.headers['authorization'], 'Bearer session-token-2');
    assert.equal(session.getState().cards[0]!.amountApplied, '60.50');
    assert.deepEqual(shopify.giftCardChanges, [{ type: 'addGiftCard', code: CODE }]);
  });

  test('removing the code in Shopify’s own gift card field releases the card', async () => {
    const { shopify, stub, session } = bound();
    stub.reply(applied());
    await session.apply({ cardNumber: CARD, pin: PIN });
    stub.reply(released);
    shopify.appliedGiftCards.value = [];
    await session.whenIdle();
    assert.equal(stub.calls[1]!.url, 'https://giftsync.example.com/check-balance/release');
    assert.deepEqual(stub.calls[1]!.body, {
      checkoutToken: 'c1f0e8d2a4b6',
      shopifyGiftCardCode: CODE,
    });
    assert.deepEqual(session.getState().cards, []);
    assert.deepEqual(shopify.giftCardChanges, [{ type: 'addGiftCard', code: CODE }]);
  });

  test('Remove releases the card and takes its code out with removeGiftCard', async () => {
    const { shopify, stub, session } = bound();
    stub.reply(applied());
    await session.apply({ cardNumber: CARD, pin: PIN });
    stub.reply(released);
    assert.equal(await session.remove(session.getState().cards[0]!.id), true);
    assert.deepEqual(shopify.giftCardChanges, [
      { type: 'addGiftCard', code: CODE },
      { type: 'removeGiftCard', code: CODE },
    ]);
    assert.deepEqual(shopify.appliedGiftCards.value, []);
    // The list emptying is our own doing: no second release.
    await session.whenIdle();
    assert.equal(stub.calls.length, 2);
  });

  test('an applyGiftCardChange error (an accelerated checkout) releases the hold', async () => {
    const { shopify, stub, session } = bound();
    shopify.refuseNext('Gift cards are not available with Apple Pay');
    stub.reply(applied(), released);
    assert.equal(await session.apply({ cardNumber: CARD, pin: PIN }), false);
    assert.deepEqual(stub.calls[1]!.body, {
      checkoutToken: 'c1f0e8d2a4b6',
      shopifyGiftCardCode: CODE,
    });
    assert.equal(session.getState().messageCode, 'checkout_refused');
    // Shopify's developer message is never shown to the shopper.
    assert.equal(JSON.stringify(session.getState()).includes('Apple Pay can'), true);
    assert.equal(JSON.stringify(session.getState()).includes('not available with'), false);
  });

  test('a refused session token is a problem like any other', async () => {
    const { stub, session } = bound();
    stub.reply(problem(401, 'invalid_session_token'));
    await session.apply({ cardNumber: CARD, pin: PIN });
    assert.equal(
      session.getState().message,
      'Your checkout session has expired. Refresh the page and try again.',
    );
  });

  test('the address follows the setting as the merchant edits it', async () => {
    const { shopify, stub, binding, session } = bound({ giftsyncUrl: '' });
    assert.equal(binding.baseUrl(), null);
    assert.equal(await session.apply({ cardNumber: CARD, pin: PIN }), false);
    assert.equal(session.getState().messageCode, 'not_configured');
    shopify.settings.value = { giftsync_url: 'https://vii.shop.example/' };
    stub.reply(applied());
    await session.apply({ cardNumber: CARD, pin: PIN });
    assert.equal(stub.calls[0]!.url, 'https://vii.shop.example/check-balance');
  });
});

describe('the extension in a DOM', () => {
  const dom = new Window({ url: 'https://shop.example/checkouts/cn/c1f0e8d2a4b6' });
  const globals = globalThis as unknown as Record<string, unknown>;
  const saved = { document: globals.document, shopify: globals.shopify, fetch: globals.fetch };

  before(() => {
    globals.document = dom.document;
  });
  after(() => {
    Object.assign(globals, saved);
    void dom.happyDOM.close();
  });

  async function settle(until: () => boolean): Promise<void> {
    // Promise turns only, no wall-clock waits: Preact renders on a microtask.
    for (let turn = 0; turn < 200 && !until(); turn += 1) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.equal(until(), true);
  }

  function type(selector: string, value: string) {
    const field = dom.document.body.querySelector(selector) as unknown as { value: string } & EventTarget;
    field.value = value;
    field.dispatchEvent(new dom.Event('input') as unknown as Event);
  }

  function button(label: string) {
    const found = Array.from(dom.document.body.querySelectorAll('s-button')).find(
      (node) => node.textContent?.trim() === label,
    );
    assert.ok(found, `no button ${label}`);
    return found as unknown as HTMLElement;
  }

  test('the shopper applies a card and removes it', async () => {
    const shopify = fakeShopify();
    const stub = new FetchStub();
    globals.shopify = shopify.api;
    globals.fetch = stub.fetch;
    dom.document.body.innerHTML = '';
    await extension();
    await settle(() => dom.document.body.querySelector('s-text-field') !== null);
    assert.equal(
      dom.document.body.querySelector('s-heading')?.textContent,
      'Pay with a Vii gift card',
    );

    stub.reply(applied());
    type('s-text-field[name=viiCardNumber]', CARD);
    type('s-password-field[name=viiCardPin]', PIN);
    await settle(() => true);
    button('Apply').click();
    await settle(() => shopify.giftCardChanges.length === 1);
    await settle(() => dom.document.body.textContent!.includes('applied'));
    assert.deepEqual(stub.calls[0]!.body, {
      viiCardNumber: CARD,
      viiCardPin: PIN,
      cartTotal: '80.00',
      checkoutToken: 'c1f0e8d2a4b6',
    });
    const row = dom.document.body.querySelector('s-text')?.textContent;
    assert.equal(row, 'Vii •••• 7890: $50.00 applied');
    assert.equal(dom.document.body.innerHTML.includes(CARD), false);
    assert.equal(dom.document.body.querySelector('s-text-field'), null);

    stub.reply(released);
    button('Remove').click();
    await settle(() => shopify.giftCardChanges.length === 2);
    assert.deepEqual(shopify.giftCardChanges[1], { type: 'removeGiftCard', code: CODE });
    await settle(() => dom.document.body.querySelector('s-text-field') !== null);
    render(null, dom.document.body);
  });

  test('a wrong PIN shows the sentence in a critical banner', async () => {
    const { binding, stub } = bound();
    dom.document.body.innerHTML = '';
    render(<ViiGiftCards binding={binding} formatMoney={(amount) => `$${amount}`} />, dom.document.body);
    stub.reply(problem(403, 'invalid_card_or_pin'));
    type('s-text-field[name=viiCardNumber]', CARD);
    type('s-password-field[name=viiCardPin]', '9999');
    await settle(() => true);
    button('Apply').click();
    await settle(() => dom.document.body.querySelector('s-banner') !== null);
    const banner = dom.document.body.querySelector('s-banner')!;
    assert.equal(banner.getAttribute('tone'), 'critical');
    assert.equal(banner.textContent, 'The card number or PIN is not right.');
    render(null, dom.document.body);
  });

  test('without an address shoppers see nothing and the merchant sees what to do', async () => {
    for (const editor of [false, true]) {
      const { binding } = bound({ giftsyncUrl: '', editor });
      dom.document.body.innerHTML = '';
      render(<ViiGiftCards binding={binding} formatMoney={(amount) => amount} />, dom.document.body);
      await settle(() => true);
      const text = dom.document.body.textContent ?? '';
      assert.equal(
        text,
        editor ? "Enter giftsync's HTTPS address in this block's settings to take Vii gift cards." : '',
      );
      render(null, dom.document.body);
    }
    const { binding, shopify } = bound({ editor: true });
    shopify.capabilities.value = [];
    render(<ViiGiftCards binding={binding} formatMoney={(amount) => amount} />, dom.document.body);
    await settle(() => true);
    assert.equal(
      dom.document.body.textContent,
      'Allow network access for this app in the Dev Dashboard to take Vii gift cards.',
    );
    render(null, dom.document.body);
  });
});

test('the checkout bundle stays under Shopify’s 64 KB limit', () => {
  const bundle = fileURLToPath(new URL('../vii-checkout.js', import.meta.url));
  const size = statSync(bundle).size;
  assert.ok(size > 10_000, `bundle suspiciously small: ${size} bytes`);
  assert.ok(size <= 64 * 1024, `bundle is ${size} bytes`);
});
