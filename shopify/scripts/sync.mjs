// Copies the built browser bundle to the two committed places that serve it: the theme
// app block's asset and the sandbox demo's script. Run after changing shopify/lib:
//   npm --prefix shopify run sync
import { copyFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BUNDLE = fileURLToPath(new URL('../dist/giftsync-browser.js', import.meta.url));
const COPIES = [
  fileURLToPath(new URL('../extensions/vii-cart-block/assets/giftsync-cart-block.js', import.meta.url)),
  fileURLToPath(new URL('../../app/static/checkout.js', import.meta.url)),
];

for (const copy of COPIES) {
  copyFileSync(BUNDLE, copy);
  console.log(`wrote ${copy}`);
}
