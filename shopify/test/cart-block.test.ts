/**
 * The theme app block and the DOM widget (the demo page's view too) in a DOM: apply through
 * the app proxy path with the cart token, the code shown for checkout's gift card field, a
 * cart change followed through /cart.js, the PIN-only form, remove.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { Window } from 'happy-dom';

import { createGiftCardSession, fromCents, tokenForGiftsync } from '../lib/giftsync-checkout.js';
import { mountCartBlock } from '../lib/giftsync-cart-block.js';
import { mountGiftCardWidget } from '../lib/giftsync-widget.js';
import { CARD, FetchStub, ManualClock, PIN, applied, problem, released } from './support';

const CART_TOKEN = 'hWN1aDQ0c2FtcGxl?key=5f2c8e0b9a7d';
const CODE = 'k3v9q2m7x1c47890';

const dom = new Window({ url: 'https://shop.example/cart' });
after(() => {
  void dom.happyDOM.close();
});

async function settle(): Promise<void> {
  for (let turn = 0; turn < 20; turn += 1) {
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function blockElement(): HTMLElement {
  dom.document.body.innerHTML = '';
  const element = dom.document.createElement('div') as unknown as HTMLElement;
  Object.assign(element.dataset, {
    giftsyncCartBlock: '',
    proxyPath: '/apps/giftsync',
    cartUrl: '/cart',
    cartToken: CART_TOKEN,
    cartTotalCents: '8000',
    currency: 'USD',
    heading: 'Pay with a Vii gift card',
  });
  (dom.document.body as unknown as HTMLElement).append(element);
  return element;
}

function fill(root: HTMLElement, name: string, value: string) {
  (root.querySelector(`input[name=${name}]`) as HTMLInputElement).value = value;
}

function submit(root: HTMLElement) {
  const form = root.querySelector('form.giftsync-form')!;
  form.dispatchEvent(new dom.Event('submit', { cancelable: true }) as unknown as Event);
}

function mountBlock() {
  const element = blockElement();
  const stub = new FetchStub();
  const clock = new ManualClock();
  let cartChanged: () => void = () => undefined;
  const block = mountCartBlock(element, {
    fetch: stub.fetch,
    clock,
    watchCart: (onChange) => {
      cartChanged = onChange;
      return () => undefined;
    },
  });
  return { element, stub, clock, block, cartChanged: () => cartChanged() };
}

describe('theme app block on the cart page', () => {
  test('applies through the app proxy with the cart token and shows the code', async () => {
    const { element, stub, block } = mountBlock();
    stub.reply(applied());
    fill(element, 'viiCardNumber', CARD);
    fill(element, 'viiCardPin', PIN);
    submit(element);
    await block.session.whenIdle();
    await settle();
    assert.equal(stub.calls[0]!.url, '/apps/giftsync/check-balance');
    assert.equal(stub.calls[0]!.credentials, 'same-origin');
    assert.equal(stub.calls[0]!.headers['authorization'], undefined);
    assert.deepEqual(stub.calls[0]!.body, {
      viiCardNumber: CARD,
      viiCardPin: PIN,
      cartTotal: '80.00',
      checkoutToken: await tokenForGiftsync(CART_TOKEN),
    });
    assert.equal(element.querySelector('.giftsync-code-value')?.textContent, CODE);
    assert.equal(
      element.querySelector('.giftsync-code')?.textContent,
      `Gift card code: ${CODE} (enter it in the gift card field at checkout)`,
    );
    assert.equal(
      element.querySelector('.giftsync-summary-text')?.textContent,
      'Vii •••• 7890 · applied $50.00 · remaining $0.00',
    );
    assert.equal((element.querySelector('input[name=viiCardNumber]') as HTMLInputElement).value, '');
    assert.equal((element.querySelector('input[name=viiCardPin]') as HTMLInputElement).value, '');
    assert.equal(element.innerHTML.includes(CARD), false);
    block.destroy();
  });

  test('a cart change is read from /cart.js and re-sizes the card', async () => {
    const { element, stub, clock, block, cartChanged } = mountBlock();
    stub.reply(applied({ amountApplied: '80.00', availableBalance: '40.00' }));
    fill(element, 'viiCardNumber', CARD);
    fill(element, 'viiCardPin', PIN);
    submit(element);
    await block.session.whenIdle();
    stub.reply(
      { status: 200, body: { token: CART_TOKEN, total_price: 4550, item_count: 1 } },
      applied({ amountApplied: '45.50', availableBalance: '40.00' }),
    );
    cartChanged();
    cartChanged();
    clock.advance(250);
    await settle();
    assert.equal(stub.calls[1]!.url, '/cart.js');
    assert.equal(stub.calls[1]!.method, 'GET');
    clock.advance(400);
    await block.session.whenIdle();
    await settle();
    assert.equal(stub.calls.length, 3);
    assert.deepEqual(stub.calls[2]!.body, {
      viiCardNumber: CARD,
      cartTotal: '45.50',
      checkoutToken: await tokenForGiftsync(CART_TOKEN),
      applyToken: 'apply-token-1',
    });
    assert.equal(
      element.querySelector('.giftsync-summary-text')?.textContent,
      'Vii •••• 7890 · applied $45.50 · remaining $40.00',
    );
    block.destroy();
  });

  test('Remove releases through the proxy and brings the form back', async () => {
    const { element, stub, block } = mountBlock();
    stub.reply(applied());
    fill(element, 'viiCardNumber', CARD);
    fill(element, 'viiCardPin', PIN);
    submit(element);
    await block.session.whenIdle();
    await settle();
    stub.reply(released);
    (element.querySelector('button.giftsync-remove') as HTMLButtonElement).click();
    await block.session.whenIdle();
    await settle();
    assert.equal(stub.calls[1]!.url, '/apps/giftsync/check-balance/release');
    assert.deepEqual(stub.calls[1]!.body, {
      checkoutToken: await tokenForGiftsync(CART_TOKEN),
      shopifyGiftCardCode: CODE,
    });
    assert.equal(element.querySelector('.giftsync-summary'), null);
    assert.equal((element.querySelector('form.giftsync-form') as HTMLElement).hidden, false);
    block.destroy();
  });

  test('a proxy signature problem is explained', async () => {
    const { element, stub, block } = mountBlock();
    stub.reply(problem(401, 'invalid_proxy_signature'));
    fill(element, 'viiCardNumber', CARD);
    fill(element, 'viiCardPin', PIN);
    submit(element);
    await block.session.whenIdle();
    await settle();
    const error = element.querySelector('.giftsync-error') as HTMLElement;
    assert.equal(error.textContent, "The store couldn't verify this request. Refresh the page and try again.");
    assert.equal(error.hidden, false);
    block.destroy();
  });
});

describe('widget as the demo page drives it', () => {
  function demo() {
    dom.document.body.innerHTML = '';
    const container = dom.document.createElement('div') as unknown as HTMLElement;
    (dom.document.body as unknown as HTMLElement).append(container);
    const stub = new FetchStub();
    const clock = new ManualClock();
    const log: string[] = [];
    const session = createGiftCardSession({
      baseUrl: 'http://127.0.0.1:8000',
      checkoutToken: 'demo-token',
      fetch: stub.fetch,
      clock,
      applyCode: (code) => {
        log.push(`applyCode(${code})`);
      },
      removeCode: (code) => {
        log.push(`removeCode(${code})`);
      },
    });
    session.setCartTotal(fromCents(8000));
    const widget = mountGiftCardWidget(container, { session });
    return { container, stub, clock, session, widget, log };
  }

  test('growing past the hold asks for the PIN only, then applies more', async () => {
    const { container, stub, clock, session, widget, log } = demo();
    stub.reply(applied({ amountApplied: '80.00', availableBalance: '40.00', viiBalance: '120.00' }));
    fill(container, 'viiCardNumber', CARD);
    fill(container, 'viiCardPin', PIN);
    submit(container);
    await session.whenIdle();
    await settle();
    assert.deepEqual(log, [`applyCode(${CODE})`]);
    assert.equal(container.querySelector('.giftsync-code'), null);
    assert.equal((container.querySelector('form.giftsync-form') as HTMLElement).hidden, true);
    assert.equal((container.querySelector('button.giftsync-add') as HTMLElement).hidden, false);

    stub.reply(problem(409, 'pin_required'));
    session.setCartTotal('100.00');
    clock.advance(400);
    await session.whenIdle();
    await settle();
    const numberLabel = container.querySelector('input[name=viiCardNumber]')!.parentElement as HTMLElement;
    const pinLabel = container.querySelector('input[name=viiCardPin]')!.parentElement as HTMLElement;
    assert.equal(numberLabel.hidden, true);
    assert.equal(pinLabel.hidden, false);
    assert.equal(
      container.querySelector('.giftsync-prompt')?.textContent,
      'Enter your PIN to apply more of your gift card.',
    );
    assert.equal((container.querySelector('.giftsync-error') as HTMLElement).hidden, true);

    stub.reply(applied({ amountApplied: '100.00', availableBalance: '20.00', viiBalance: '120.00' }));
    fill(container, 'viiCardPin', PIN);
    submit(container);
    await session.whenIdle();
    await settle();
    assert.deepEqual(stub.calls[2]!.body, {
      viiCardNumber: CARD,
      cartTotal: '100.00',
      checkoutToken: 'demo-token',
      applyToken: 'apply-token-1',
      viiCardPin: PIN,
    });
    assert.equal(
      container.querySelector('.giftsync-summary-text')?.textContent,
      'Vii •••• 7890 · applied $100.00 · remaining $20.00',
    );
    assert.equal((container.querySelector('form.giftsync-form') as HTMLElement).hidden, true);
    assert.deepEqual(log, [`applyCode(${CODE})`]);
    widget.destroy();
  });

  test('Apply stays disabled while Retry-After runs', async () => {
    const { container, stub, clock, session, widget } = demo();
    stub.reply(problem(503, 'vii_unavailable', '30'));
    fill(container, 'viiCardNumber', CARD);
    fill(container, 'viiCardPin', PIN);
    submit(container);
    await session.whenIdle();
    await settle();
    const apply = container.querySelector('button.giftsync-apply') as HTMLButtonElement;
    assert.equal(apply.disabled, true);
    assert.equal(
      container.querySelector('.giftsync-error')?.textContent,
      "The gift card service isn't answering right now. Please try again in 30 seconds.",
    );
    clock.advance(30_000);
    await settle();
    assert.equal(apply.disabled, false);
    widget.destroy();
  });
});
