/**
 * Test doubles: a manual clock, a fetch stub that answers like giftsync (answers and RFC 9457
 * problems) and can hold an answer back, and a stand-in for Shopify's checkout API whose
 * values are Preact signals, as they are in checkout (`shopify.setSignals`).
 */
import { signal } from '@preact/signals';

import type { CheckoutApi } from '../extensions/vii-checkout/src/binding';
import type { Clock } from '../lib/giftsync-checkout.js';

export const CARD = '6280001234567890';
export const OTHER_CARD = '6280009876543210';
export const PIN = '1234';

export class ManualClock implements Clock {
  nowMs = Date.UTC(2026, 11, 1, 12, 0, 0);
  private readonly timers = new Map<number, { at: number; callback: () => void }>();
  private nextId = 1;

  now = (): number => this.nowMs;

  setTimeout = (callback: () => void, ms: number): unknown => {
    const id = this.nextId++;
    this.timers.set(id, { at: this.nowMs + ms, callback });
    return id;
  };

  clearTimeout = (handle: unknown): void => {
    this.timers.delete(handle as number);
  };

  /** Move time forward, running every timer that falls due on the way, in order. */
  advance(ms: number): void {
    const end = this.nowMs + ms;
    for (;;) {
      let nextId: number | null = null;
      let nextAt = Infinity;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && timer.at < nextAt) {
          nextId = id;
          nextAt = timer.at;
        }
      }
      if (nextId === null) {
        break;
      }
      const timer = this.timers.get(nextId)!;
      this.timers.delete(nextId);
      this.nowMs = timer.at;
      timer.callback();
    }
    this.nowMs = end;
  }
}

export interface Reply {
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export interface Call {
  url: string;
  method: string;
  headers: Record<string, string>;
  credentials: RequestCredentials | undefined;
  body: Record<string, unknown>;
}

/** An answer that never comes: the call ends only when its signal aborts, as fetch does. */
export const NO_ANSWER = Symbol('no answer');

type Answer = Reply | Error | typeof NO_ANSWER | (() => Promise<Reply | Error>);

/** A successful `POST /check-balance` answer (DESIGN 3). */
export function applied(overrides: Record<string, string> = {}): Reply {
  return {
    status: 200,
    body: {
      amountApplied: '50.00',
      shopifyGiftCardCode: 'k3v9q2m7x1c47890',
      shopifyGiftCardLastCharacters: '7890',
      shopifyGiftCardStatus: 'enabled',
      viiGiftCardNumber: '•••• 7890',
      viiBalance: '50.00',
      availableBalance: '0.00',
      expiresAt: '2026-12-02T12:00:00Z',
      applyToken: 'apply-token-1',
      ...overrides,
    },
    headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' },
  };
}

/** An RFC 9457 problem answer. */
export function problem(status: number, code: string, retryAfter?: string): Reply {
  return {
    status,
    body: { type: 'about:blank', title: code, status, detail: `server detail for ${code}`, code },
    headers: {
      'Content-Type': 'application/problem+json',
      ...(retryAfter === undefined ? {} : { 'Retry-After': retryAfter }),
    },
  };
}

export const released: Reply = { status: 200, body: { released: true } };

/** Answers calls in order from a queue; counts how many are in flight at once. */
export class FetchStub {
  readonly calls: Call[] = [];
  private readonly answers: Answer[] = [];
  inFlight = 0;
  maxInFlight = 0;

  reply(...answers: Answer[]): this {
    this.answers.push(...answers);
    return this;
  }

  /** The next call waits until `release` is called with its answer. */
  hold(): { release: (answer: Reply | Error) => void } {
    let release!: (answer: Reply | Error) => void;
    const gate = new Promise<Reply | Error>((resolve) => {
      release = resolve;
    });
    this.answers.push(() => gate);
    return { release };
  }

  get pending(): number {
    return this.answers.length;
  }

  fetch = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, name) => {
      headers[name] = value;
    });
    this.calls.push({
      url: String(input),
      method: init.method ?? 'GET',
      headers,
      credentials: init.credentials,
      body: typeof init.body === 'string' ? (JSON.parse(init.body) as Record<string, unknown>) : {},
    });
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      const next = this.answers.shift();
      if (next === undefined) {
        throw new Error(`unexpected call ${init.method ?? 'GET'} ${String(input)}`);
      }
      if (next === NO_ANSWER) {
        await new Promise((_, reject) => {
          init.signal?.addEventListener('abort', () => reject(new Error('The operation was aborted')));
        });
      }
      const answer = typeof next === 'function' ? await next() : (next as Reply | Error);
      if (answer instanceof Error) {
        throw answer;
      }
      return new Response(answer.body === undefined ? null : JSON.stringify(answer.body), {
        status: answer.status ?? 200,
        headers: answer.headers ?? { 'Content-Type': 'application/json' },
      });
    } finally {
      this.inFlight -= 1;
    }
  };
}

export interface AppliedCard {
  lastCharacters: string;
  amountUsed: { amount: number; currencyCode: 'USD' };
  balance: { amount: number; currencyCode: 'USD' };
}

/** A stand-in for the `shopify` global of purchase.checkout.reductions.render-after. */
export function fakeShopify(options: { giftsyncUrl?: string; editor?: boolean } = {}) {
  const totalAmount = signal({ amount: 80, currencyCode: 'USD' as const });
  const appliedGiftCards = signal<AppliedCard[]>([]);
  const settings = signal<Record<string, string | undefined>>({
    giftsync_url: options.giftsyncUrl ?? 'https://giftsync.example.com',
  });
  const checkoutToken = signal<string | undefined>('c1f0e8d2a4b6');
  const capabilities = signal<string[]>(['network_access']);
  const giftCardChanges: { type: string; code: string }[] = [];
  const refuse = { next: null as string | null };
  let tokens = 0;

  const api = {
    async applyGiftCardChange(change: { type: 'addGiftCard' | 'removeGiftCard'; code: string }) {
      giftCardChanges.push({ type: change.type, code: change.code });
      if (refuse.next !== null) {
        const message = refuse.next;
        refuse.next = null;
        return { type: 'error' as const, message };
      }
      const last = change.code.slice(-4);
      const others = appliedGiftCards.value.filter((card) => card.lastCharacters !== last);
      appliedGiftCards.value =
        change.type === 'addGiftCard'
          ? [
              ...others,
              {
                lastCharacters: last,
                amountUsed: { amount: 0, currencyCode: 'USD' },
                balance: { amount: 0, currencyCode: 'USD' },
              },
            ]
          : others;
      return { type: 'success' as const };
    },
    appliedGiftCards,
    checkoutToken,
    cost: { totalAmount },
    extension: {
      editor: options.editor ? { type: 'checkout' as const } : undefined,
      capabilities,
    },
    i18n: { formatCurrency: (amount: number) => `$${amount.toFixed(2)}` },
    sessionToken: {
      get: async () => {
        tokens += 1;
        return `session-token-${tokens}`;
      },
    },
    settings,
  };
  return {
    api: api as unknown as CheckoutApi,
    totalAmount,
    appliedGiftCards,
    settings,
    checkoutToken,
    capabilities,
    giftCardChanges,
    /** The next applyGiftCardChange answers `{type: "error", message}`. */
    refuseNext(message: string) {
      refuse.next = message;
    },
  };
}
