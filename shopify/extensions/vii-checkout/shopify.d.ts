// What Shopify's CLI generates for this target (it rewrites this file on `app dev` and
// `app build`): the `shopify` global of Checkout.tsx is the reductions target's API.
import '@shopify/ui-extensions';

//@ts-ignore
declare module './src/Checkout.tsx' {
  const shopify: import('@shopify/ui-extensions/purchase.checkout.reductions.render-after').Api;
  const globalThis: { shopify: typeof shopify };
}
