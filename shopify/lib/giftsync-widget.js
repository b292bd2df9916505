// @ts-check
/**
 * A plain DOM view over a giftsync session (giftsync-checkout.js), for pages with a real
 * DOM: the theme app block on the cart page and the sandbox demo page. The checkout UI
 * extension draws its own view with Polaris components over the same session.
 *
 * Everything from the server is set as text, never as markup. After an apply the number
 * and PIN fields are emptied; the PIN field is emptied on every submit.
 */

/**
 * @typedef {import('./giftsync-checkout.js').GiftCardSession} GiftCardSession
 * @typedef {import('./giftsync-checkout.js').SessionState} SessionState
 * @typedef {import('./giftsync-checkout.js').CardView} CardView
 */

/**
 * @typedef {object} WidgetOptions
 * @property {GiftCardSession} session
 * @property {boolean} [showCode]  show the code for checkout's gift card field (cart page)
 * @property {(amount: string) => string} [formatMoney]  display only; amounts stay strings
 * @property {string} [heading]
 */

/**
 * @typedef {object} Widget
 * @property {HTMLElement} root
 * @property {() => void} destroy
 */

/** @param {string} amount */
const dollars = (amount) => `$${amount}`;

/**
 * Draw the gift card form and the applied cards into `container`.
 * @param {HTMLElement} container
 * @param {WidgetOptions} options
 * @returns {Widget}
 */
export function mountGiftCardWidget(container, options) {
  const { session } = options;
  const doc = container.ownerDocument;
  const formatMoney = options.formatMoney ?? dollars;
  const heading = options.heading ?? "Pay with a Vii gift card";
  let adding = false;

  /**
   * @param {string} tag
   * @param {Record<string, string>} [attributes]
   * @param {string} [text]
   * @returns {HTMLElement}
   */
  function element(tag, attributes = {}, text = undefined) {
    const node = doc.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      node.setAttribute(name, value);
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  /**
   * @param {HTMLElement} node
   * @param {boolean} shown
   */
  function show(node, shown) {
    node.hidden = !shown;
    // Inline style too: a theme's `label { display: block }` would beat [hidden].
    node.style.display = shown ? "" : "none";
  }

  const root = element("div", { class: "giftsync" });
  const cards = element("div", { class: "giftsync-cards" });
  const form = element("form", { class: "giftsync-form", novalidate: "novalidate" });
  const prompt = element("p", { class: "giftsync-prompt" }, heading);
  const numberLabel = element("label", {}, "Card number ");
  const numberInput = /** @type {HTMLInputElement} */ (element("input", {
    name: "viiCardNumber",
    type: "text",
    inputmode: "numeric",
    autocomplete: "off",
    spellcheck: "false",
    maxlength: "23",
  }));
  numberLabel.append(numberInput);
  const pinLabel = element("label", {}, "PIN ");
  const pinInput = /** @type {HTMLInputElement} */ (element("input", {
    name: "viiCardPin",
    type: "password",
    inputmode: "numeric",
    autocomplete: "off",
    maxlength: "8",
  }));
  pinLabel.append(pinInput);
  const applyButton = /** @type {HTMLButtonElement} */ (
    element("button", { type: "submit", class: "giftsync-apply" }, "Apply")
  );
  form.append(prompt, numberLabel, pinLabel, applyButton);
  const addButton = element(
    "button",
    { type: "button", class: "giftsync-add" },
    "Use another gift card",
  );
  const error = element("p", { class: "giftsync-error", role: "alert" });
  const status = element("p", { class: "giftsync-status", "aria-live": "polite" });
  root.append(cards, form, addButton, error, status);
  container.append(root);

  /** @param {SessionState} state */
  function cardNeedingPin(state) {
    return state.cards.find((card) => card.status === "needs_pin") ?? null;
  }

  /** @param {CardView} card */
  function drawCard(card) {
    const row = element("div", { class: "giftsync-summary", "data-card-id": String(card.id) });
    const summary = element(
      "span",
      { class: "giftsync-summary-text" },
      `Vii ${card.viiCardNumber} · applied ${formatMoney(card.amountApplied)}` +
        ` · remaining ${formatMoney(card.availableBalance)}`,
    );
    const removeButton = /** @type {HTMLButtonElement} */ (
      element(
        "button",
        { type: "button", class: "giftsync-remove" },
        card.status === "removing" ? "Removing…" : "Remove",
      )
    );
    removeButton.disabled = card.status === "removing" || card.status === "updating";
    removeButton.addEventListener("click", () => {
      void session.remove(card.id);
    });
    row.append(summary, doc.createTextNode(" "), removeButton);
    if (options.showCode) {
      const code = element("p", { class: "giftsync-code" }, "Gift card code: ");
      code.append(
        element("strong", { class: "giftsync-code-value" }, card.code),
        doc.createTextNode(" (enter it in the gift card field at checkout)"),
      );
      row.append(code);
    }
    if (card.message && card.status !== "needs_pin") {
      row.append(element("p", { class: "giftsync-card-message", role: "status" }, card.message));
    }
    return row;
  }

  /** @param {SessionState} state */
  function render(state) {
    cards.replaceChildren(...state.cards.map(drawCard));
    const pinCard = cardNeedingPin(state);
    const entry = state.cards.length === 0 || adding;
    if (pinCard) {
      // The number is in the session's memory; ask only for what is missing.
      prompt.textContent = "Enter your PIN to apply more of your gift card.";
      show(form, true);
      show(numberLabel, false);
      show(pinLabel, true);
    } else {
      prompt.textContent = heading;
      show(form, entry);
      show(numberLabel, true);
      show(pinLabel, true);
    }
    show(addButton, !pinCard && !entry);
    const pinProblem = pinCard?.messageCode === "pin_required" ? null : pinCard?.message;
    const problem = pinCard ? pinProblem : state.message;
    error.textContent = problem ?? "";
    show(error, Boolean(problem));
    const working =
      state.applying || state.cards.some((card) => card.status === "updating");
    status.textContent = working ? "Checking your gift card…" : "";
    applyButton.disabled = working || state.retryAt !== null;
  }

  /** @param {Event} event */
  function onSubmit(event) {
    event.preventDefault();
    const pin = pinInput.value;
    pinInput.value = "";
    const pinCard = cardNeedingPin(session.getState());
    if (pinCard) {
      void session.providePin(pinCard.id, pin);
      return;
    }
    void session.apply({ cardNumber: numberInput.value, pin }).then((applied) => {
      if (applied) {
        numberInput.value = "";
        adding = false;
        render(session.getState());
      }
    });
  }

  form.addEventListener("submit", onSubmit);
  addButton.addEventListener("click", () => {
    adding = true;
    render(session.getState());
    numberInput.focus();
  });
  const unsubscribe = session.subscribe(render);
  render(session.getState());

  return {
    root,
    destroy() {
      unsubscribe();
      root.remove();
    },
  };
}
