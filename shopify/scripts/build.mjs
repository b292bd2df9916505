// Bundles everything with esbuild into dist/ (git-ignored):
// - dist/vii-checkout.js: the checkout UI extension, bundled and minified the way Shopify's
//   CLI does on `shopify app deploy` (the CLI needs Node 22; this proves it bundles, and
//   its size is checked against Shopify's 64 KB limit);
// - dist/giftsync-browser.js: the theme block asset and the demo page script (`npm run sync`
//   copies it to both places; a test fails when a committed copy is stale);
// - dist/test/*.test.mjs: the tests, run by `node --test`.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as esbuild from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = join(root, 'dist');

const testEntries = readdirSync(join(root, 'test'))
  .filter((name) => /\.test\.(js|ts|tsx)$/.test(name))
  .map((name) => join(root, 'test', name));

await Promise.all([
  esbuild.build({
    absWorkingDir: root,
    entryPoints: ['extensions/vii-checkout/src/Checkout.tsx'],
    outfile: join(dist, 'vii-checkout.js'),
    bundle: true,
    format: 'esm',
    minify: true,
    target: 'es2020',
    legalComments: 'none',
    logLevel: 'warning',
  }),
  esbuild.build({
    absWorkingDir: root,
    entryPoints: ['lib/giftsync-browser.js'],
    outfile: join(dist, 'giftsync-browser.js'),
    bundle: true,
    format: 'iife',
    minify: true,
    // Storefront and demo browsers; the code uses nothing newer.
    target: 'es2020',
    charset: 'utf8',
    legalComments: 'none',
    banner: {
      js: '/* giftsync browser bundle, built from shopify/lib by `npm --prefix shopify run sync`. Do not edit. */',
    },
    logLevel: 'warning',
  }),
  esbuild.build({
    absWorkingDir: root,
    entryPoints: testEntries,
    outdir: join(dist, 'test'),
    outExtension: { '.js': '.mjs' },
    bundle: true,
    // One copy of preact and friends: the tests and the code under test share node_modules.
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'inline',
    logLevel: 'warning',
  }),
]);
