/**
 * The files Shopify's CLI deploys agree with the code: the committed copies of the browser
 * bundle are the fresh build, the theme block names assets that exist, the checkout
 * extension's TOML names the entry, setting and API version the code uses.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Window } from 'happy-dom';

import { SETTING_URL } from '../extensions/vii-checkout/src/binding';

const shopifyDir = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const read = (path: string) => readFileSync(shopifyDir(path), 'utf8');

test('the theme asset and the demo script are the fresh browser bundle, byte for byte', () => {
  const bundle = readFileSync(shopifyDir('dist/giftsync-browser.js'));
  for (const copy of [
    'extensions/vii-cart-block/assets/giftsync-cart-block.js',
    '../app/static/checkout.js',
  ]) {
    assert.ok(
      readFileSync(shopifyDir(copy)).equals(bundle),
      `${copy} is stale: run \`npm --prefix shopify run sync\` and commit it`,
    );
  }
});

test('the committed bundle exposes GiftSync and mounts every cart block on the page', async () => {
  const page = new Window({
    url: 'https://shop.example/cart',
    // Our own bundle, run the way a storefront runs the block's asset.
    settings: { enableJavaScriptEvaluation: true, suppressInsecureJavaScriptEnvironmentWarning: true },
  });
  try {
    page.document.body.innerHTML =
      '<div id="a" data-giftsync-cart-block data-cart-token="t1" data-cart-total-cents="8000"></div>' +
      '<div id="b" data-giftsync-cart-block data-cart-token="t1" data-cart-total-cents="8000"></div>';
    const script = page.document.createElement('script');
    script.textContent = read('extensions/vii-cart-block/assets/giftsync-cart-block.js');
    page.document.body.appendChild(script);
    const exposed = (page as unknown as { GiftSync?: Record<string, unknown> }).GiftSync;
    assert.deepEqual(Object.keys(exposed ?? {}).sort(), [
      'MESSAGES',
      'checkBalanceEndpoints',
      'createGiftCardSession',
      'messageFor',
      'mountCartBlock',
      'mountGiftCardWidget',
      'normalizeBaseUrl',
    ]);
    for (const id of ['a', 'b']) {
      const block = page.document.getElementById(id)!;
      assert.equal(block.getAttribute('data-giftsync-mounted'), 'true');
      assert.equal(block.querySelectorAll('input[name=viiCardNumber]').length, 1);
      assert.equal(block.querySelector('.giftsync-prompt')?.textContent, 'Pay with a Vii gift card');
    }
  } finally {
    await page.happyDOM.close();
  }
});

test('the cart block loads assets that exist and is limited to the cart page', () => {
  const liquid = read('extensions/vii-cart-block/blocks/vii-gift-card.liquid');
  const schemaText = /{% schema %}([\s\S]*){% endschema %}/.exec(liquid)?.[1];
  assert.ok(schemaText);
  const schema = JSON.parse(schemaText) as {
    target: string;
    javascript: string;
    stylesheet: string;
    enabled_on: { templates: string[] };
    settings: { id: string; default?: string }[];
  };
  assert.equal(schema.target, 'section');
  assert.deepEqual(schema.enabled_on, { templates: ['cart'] });
  assert.equal(schema.javascript, 'giftsync-cart-block.js');
  for (const asset of [schema.javascript, schema.stylesheet]) {
    assert.ok(existsSync(shopifyDir(`extensions/vii-cart-block/assets/${asset}`)), asset);
  }
  assert.deepEqual(
    schema.settings.map((setting) => [setting.id, setting.default]),
    [
      ['heading', 'Pay with a Vii gift card'],
      ['proxy_path', '/apps/giftsync'],
    ],
  );
  // The data attributes lib/giftsync-cart-block.js reads.
  for (const attribute of [
    'data-giftsync-cart-block',
    'data-proxy-path=',
    'data-cart-url=',
    'data-cart-token=',
    'data-cart-total-cents=',
    'data-currency=',
    'data-heading=',
  ]) {
    assert.ok(liquid.includes(attribute), attribute);
  }
});

test('the checkout extension TOML matches the code and the installed API version', () => {
  const toml = read('extensions/vii-checkout/shopify.extension.toml');
  const value = (key: string) => new RegExp(`^${key} = "([^"]*)"$`, 'm').exec(toml)?.[1];
  assert.equal(value('api_version'), '2026-07');
  assert.equal(value('type'), 'ui_extension');
  assert.equal(value('target'), 'purchase.checkout.reductions.render-after');
  assert.equal(value('module'), './src/Checkout.tsx');
  assert.ok(existsSync(shopifyDir('extensions/vii-checkout/src/Checkout.tsx')));
  assert.equal(value('key'), SETTING_URL);
  assert.match(toml, /^\[extensions\.capabilities\]\nnetwork_access = true$/m);
  const installed = JSON.parse(read('node_modules/@shopify/ui-extensions/package.json')) as {
    version: string;
  };
  assert.match(installed.version, /^2026\.7\./);
});
