/**
 * Vii gift cards in Shopify checkout, beside the discount and gift card field: the shopper
 * types the Vii card number and PIN, giftsync holds the amount on the Vii card and answers
 * with a Shopify gift card code, and this extension applies that code to the checkout.
 * The logic (calls, re-sizes, releases, messages) is lib/giftsync-checkout.js.
 */
import '@shopify/ui-extensions/preact';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';

import type { CardView, GiftCardSession, SessionState } from '../../../lib/giftsync-checkout.js';
import { bindCheckout, type CheckoutBinding } from './binding';

export default async () => {
  const binding = bindCheckout(shopify);
  // Display only: amounts stay decimal strings everywhere else.
  const formatMoney = (amount: string) => shopify.i18n.formatCurrency(Number(amount));
  render(<ViiGiftCards binding={binding} formatMoney={formatMoney} />, document.body);
};

interface ViewProps {
  binding: CheckoutBinding;
  formatMoney: (amount: string) => string;
}

/** A Polaris field's value from its input event (typed as a plain `Event`). */
function fieldValue(event: Event): string {
  const field = event.currentTarget as { value?: unknown } | null;
  return typeof field?.value === 'string' ? field.value : '';
}

function useSessionState(session: GiftCardSession): SessionState {
  const [state, setState] = useState(session.getState());
  useEffect(() => {
    const unsubscribe = session.subscribe(setState);
    return () => {
      unsubscribe();
    };
  }, [session]);
  return state;
}

export function ViiGiftCards({ binding, formatMoney }: ViewProps) {
  const { session } = binding;
  const state = useSessionState(session);
  const [cardNumber, setCardNumber] = useState('');
  const [pin, setPin] = useState('');
  const [adding, setAdding] = useState(false);

  if (binding.baseUrl() === null || !binding.networkAccess()) {
    // Shoppers never see a block that cannot work; the merchant does, in the editor.
    return binding.inEditor ? <SetupBanner networkAccess={binding.networkAccess()} /> : null;
  }

  const pinCard = state.cards.find((card) => card.status === 'needs_pin') ?? null;
  const entryOpen = state.cards.length === 0 || adding;
  const working = state.applying || state.cards.some((card) => card.status === 'updating');

  const submitEntry = async () => {
    const typedPin = pin;
    setPin('');
    if (await session.apply({ cardNumber, pin: typedPin })) {
      setCardNumber('');
      setAdding(false);
    }
  };
  const submitPin = async (card: CardView) => {
    const typedPin = pin;
    setPin('');
    await session.providePin(card.id, typedPin);
  };

  const pinProblem = pinCard?.messageCode === 'pin_required' ? null : pinCard?.message;
  const problem = pinCard ? pinProblem : state.message;

  return (
    <s-stack gap="base">
      {state.cards.map((card) => (
        <CardRow key={card.id} card={card} session={session} formatMoney={formatMoney} />
      ))}
      {pinCard ? (
        <s-stack gap="base">
          <s-text>{`Enter the PIN of Vii ${pinCard.viiCardNumber} to apply more of it.`}</s-text>
          <s-password-field
            label="PIN"
            name="viiCardPin"
            value={pin}
            onInput={(event) => setPin(fieldValue(event))}
          />
          <s-button
            loading={pinCard.status === 'updating'}
            onClick={() => void submitPin(pinCard)}
          >
            Apply
          </s-button>
        </s-stack>
      ) : entryOpen ? (
        <s-stack gap="base">
          <s-heading>Pay with a Vii gift card</s-heading>
          <s-text-field
            label="Vii gift card number"
            name="viiCardNumber"
            value={cardNumber}
            onInput={(event) => setCardNumber(fieldValue(event))}
          />
          <s-password-field
            label="PIN"
            name="viiCardPin"
            value={pin}
            onInput={(event) => setPin(fieldValue(event))}
          />
          <s-button
            variant="secondary"
            loading={state.applying}
            disabled={working || state.retryAt !== null}
            onClick={() => void submitEntry()}
          >
            Apply
          </s-button>
        </s-stack>
      ) : (
        <s-button variant="secondary" onClick={() => setAdding(true)}>
          Use another Vii gift card
        </s-button>
      )}
      {problem ? <s-banner tone="critical">{problem}</s-banner> : null}
    </s-stack>
  );
}

interface CardRowProps {
  card: CardView;
  session: GiftCardSession;
  formatMoney: (amount: string) => string;
}

function CardRow({ card, session, formatMoney }: CardRowProps) {
  return (
    <s-stack gap="small-200">
      <s-stack direction="inline" gap="base" alignItems="center" justifyContent="space-between">
        <s-text>{`Vii ${card.viiCardNumber}: ${formatMoney(card.amountApplied)} applied`}</s-text>
        <s-button
          variant="secondary"
          loading={card.status === 'removing'}
          disabled={card.status === 'updating'}
          onClick={() => void session.remove(card.id)}
        >
          Remove
        </s-button>
      </s-stack>
      {card.message && card.status !== 'needs_pin' ? (
        <s-text tone="warning">{card.message}</s-text>
      ) : null}
    </s-stack>
  );
}

function SetupBanner({ networkAccess }: { networkAccess: boolean }) {
  return (
    <s-banner tone="warning" heading="Vii gift card">
      {networkAccess
        ? "Enter giftsync's HTTPS address in this block's settings to take Vii gift cards."
        : 'Allow network access for this app in the Dev Dashboard to take Vii gift cards.'}
    </s-banner>
  );
}
