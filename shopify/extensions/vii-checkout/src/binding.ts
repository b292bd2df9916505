/**
 * Binds the shared session (lib/giftsync-checkout.js) to Shopify's checkout API: giftsync's
 * address from the extension setting, the checkout token, a fresh session token for every
 * call, `applyGiftCardChange` to put codes in and out, the total from `cost.totalAmount`
 * and the applied gift cards to notice a removal made in Shopify's own field.
 */
import type { Api } from '@shopify/ui-extensions/purchase.checkout.reductions.render-after';

import {
  createGiftCardSession,
  normalizeBaseUrl,
  type Clock,
  type CodeChangeResult,
  type GiftCardSession,
} from '../../../lib/giftsync-checkout.js';

export const SETTING_URL = 'giftsync_url';

/** The part of the target API this extension uses; the tests stand in for exactly this. */
export type CheckoutApi = Pick<
  Api,
  | 'applyGiftCardChange'
  | 'appliedGiftCards'
  | 'checkoutToken'
  | 'cost'
  | 'extension'
  | 'i18n'
  | 'sessionToken'
  | 'settings'
>;

export interface BindingOptions {
  fetch?: typeof fetch;
  clock?: Clock;
  resizeDelayMs?: number;
}

export interface CheckoutBinding {
  session: GiftCardSession;
  /** giftsync's address, or null while the merchant has not given a usable one. */
  baseUrl(): string | null;
  /** The extension runs in the checkout editor (where the merchant configures it). */
  inEditor: boolean;
  /** Shopify granted `network_access` (the Dev Dashboard switch, DESIGN 9). */
  networkAccess(): boolean;
  dispose(): void;
}

async function giftCardChange(
  api: CheckoutApi,
  type: 'addGiftCard' | 'removeGiftCard',
  code: string,
): Promise<CodeChangeResult> {
  const result = await api.applyGiftCardChange({ type, code });
  // Shopify's message is for developers, not shoppers (its type declaration says so).
  return result.type === 'success' ? { ok: true } : { ok: false, message: result.message };
}

export function bindCheckout(api: CheckoutApi, options: BindingOptions = {}): CheckoutBinding {
  const baseUrl = () => normalizeBaseUrl(api.settings.value[SETTING_URL]);
  const session = createGiftCardSession({
    baseUrl,
    checkoutToken: () => api.checkoutToken.value,
    sessionToken: () => api.sessionToken.get(),
    applyCode: (code) => giftCardChange(api, 'addGiftCard', code),
    removeCode: (code) => giftCardChange(api, 'removeGiftCard', code),
    ...(options.fetch ? { fetch: options.fetch } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.resizeDelayMs !== undefined ? { resizeDelayMs: options.resizeDelayMs } : {}),
  });

  // Gift cards are not part of `totalAmount` (its declaration says so), so applying one
  // never moves the total it was sized from.
  session.setCartTotal(api.cost.totalAmount.value.amount);
  const stopTotal = api.cost.totalAmount.subscribe((money) => session.setCartTotal(money.amount));
  const stopCards = api.appliedGiftCards.subscribe(() =>
    // Read the list again rather than trusting the notified value's age.
    session.syncAppliedCodes(api.appliedGiftCards.value.map((card) => card.lastCharacters)),
  );

  return {
    session,
    baseUrl,
    inEditor: api.extension.editor !== undefined,
    networkAccess: () => api.extension.capabilities.value.includes('network_access'),
    dispose() {
      stopTotal();
      stopCards();
      session.dispose();
    },
  };
}
