/*
 * giftsync checkout widget: pay part of a cart with a Vii gift card.
 *
 * Plain JavaScript, no build step, no dependencies. Usage:
 *
 *   var widget = GiftSync.init({
 *     endpoint: "https://giftsync.example",   // base URL, or the full .../check-balance URL
 *     checkoutToken: "the checkout's token",  // the same for the whole checkout
 *     getCartTotal: function () { return "80.00"; },
 *     applyCode: function (code) { ... },     // may return a Promise
 *     removeCode: function (code) { ... },    // may return a Promise
 *     container: document.getElementById("giftsync")
 *   });
 *   widget.onCartTotalChange("50.00");        // also GiftSync.onCartTotalChange(...)
 *
 * Privacy: the Vii card number lives only in this closure, never in the DOM after a
 * successful apply and never in storage; the PIN is sent once and forgotten. localStorage
 * holds only the shadow card's last 4 characters and the amounts, so a reload can show
 * what was applied.
 *
 * Money stays a decimal string from end to end: this script never does arithmetic on it,
 * so binary floating point cannot round a cent away.
 */
(function (global) {
  "use strict";

  var STORAGE_KEY = "giftsync.applied";
  var REQUEST_TIMEOUT_MS = 15000;
  var NETWORK_DETAIL = "Could not reach the gift card service. Please try again.";
  var lastWidget = null;

  function urls(endpoint) {
    var base = String(endpoint || "").replace(/\/+$/, "");
    // Both readings of `endpoint` work: a base URL, or the check-balance URL itself.
    var checkBalance = /\/check-balance$/.test(base) ? base : base + "/check-balance";
    return { checkBalance: checkBalance, release: checkBalance + "/release" };
  }

  function element(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      node.setAttribute(name, attributes[name]);
    });
    if (text !== undefined) {
      node.textContent = text; // server text is data, never markup
    }
    return node;
  }

  function show(node, shown) {
    node.hidden = !shown;
    // Inline style too: a host page's `label { display: block }` would beat [hidden].
    node.style.display = shown ? "" : "none";
  }

  function digitsOnly(value) {
    return String(value || "").replace(/[\s-]/g, "");
  }

  function money(amount) {
    return "$" + amount;
  }

  function asDecimalString(total) {
    // A number from the caller's cart is turned into text once, with two decimals.
    return typeof total === "number" ? total.toFixed(2) : String(total).trim();
  }

  function readStored() {
    try {
      var raw = global.localStorage.getItem(STORAGE_KEY);
      return raw ? JSON.parse(raw) : null;
    } catch (ignored) {
      return null;
    }
  }

  function store(answer) {
    var summary = {
      shadowLast4: answer.shopifyGiftCardLastCharacters,
      amountApplied: answer.amountApplied,
      remaining: answer.availableBalance
    };
    try {
      global.localStorage.setItem(STORAGE_KEY, JSON.stringify(summary));
    } catch (ignored) {
      // Storage is a convenience for reloads; a private window without it still works.
    }
  }

  function forget() {
    try {
      global.localStorage.removeItem(STORAGE_KEY);
    } catch (ignored) {
      // See store().
    }
  }

  function postJson(url, body) {
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var timer = controller
      ? setTimeout(function () {
          controller.abort();
        }, REQUEST_TIMEOUT_MS)
      : null;
    return fetch(url, {
      method: "POST",
      credentials: "omit",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json, application/problem+json"
      },
      body: JSON.stringify(body),
      signal: controller ? controller.signal : undefined
    })
      .then(
        function (response) {
          return response.json().then(
            function (data) {
              return { ok: response.ok, status: response.status, data: data || {} };
            },
            function () {
              return { ok: response.ok, status: response.status, data: {} };
            }
          );
        },
        function () {
          return { ok: false, status: 0, data: { code: "network_error", detail: NETWORK_DETAIL } };
        }
      )
      .then(function (result) {
        if (timer) {
          clearTimeout(timer);
        }
        return result;
      });
  }

  function problemDetail(result) {
    var data = result.data || {};
    if (typeof data.detail === "string" && data.detail) {
      return data.detail;
    }
    return "The gift card could not be applied (error " + result.status + ").";
  }

  function init(options) {
    if (!options || !options.container) {
      throw new Error("GiftSync.init needs options.container");
    }
    if (!options.checkoutToken) {
      throw new Error("GiftSync.init needs options.checkoutToken");
    }
    var endpoints = urls(options.endpoint);
    var container = options.container;
    var applyCode = options.applyCode || function () {};
    var removeCode = options.removeCode || function () {};
    var getCartTotal =
      options.getCartTotal ||
      function () {
        return "0.00";
      };

    // The only copy of the card number: memory of this closure, gone on reload.
    var cardNumber = null;
    var appliedCode = null;
    var pendingTotal = null; // a cart total waiting for the shopper's PIN
    var queue = Promise.resolve(); // one request at a time, in the order asked

    var root = element("div", { class: "giftsync" });
    var form = element("form", { class: "giftsync-form", novalidate: "novalidate" });
    var prompt = element("p", { class: "giftsync-prompt" }, "Pay with a Vii gift card");
    var numberLabel = element("label", {}, "Card number ");
    var numberInput = element("input", {
      name: "viiCardNumber",
      type: "text",
      inputmode: "numeric",
      autocomplete: "off",
      spellcheck: "false",
      maxlength: "23"
    });
    numberLabel.appendChild(numberInput);
    var pinLabel = element("label", {}, "PIN ");
    var pinInput = element("input", {
      name: "viiCardPin",
      type: "password",
      inputmode: "numeric",
      autocomplete: "off",
      maxlength: "8"
    });
    pinLabel.appendChild(pinInput);
    var submitButton = element("button", { type: "submit", class: "giftsync-apply" }, "Apply");
    form.appendChild(prompt);
    form.appendChild(numberLabel);
    form.appendChild(pinLabel);
    form.appendChild(submitButton);

    var summary = element("div", { class: "giftsync-summary" });
    var summaryText = element("span", { class: "giftsync-summary-text" });
    var removeButton = element("button", { type: "button", class: "giftsync-remove" }, "Remove");
    summary.appendChild(summaryText);
    summary.appendChild(document.createTextNode(" "));
    summary.appendChild(removeButton);

    var error = element("p", { class: "giftsync-error", role: "alert" });
    var status = element("p", { class: "giftsync-status", "aria-live": "polite" });

    root.appendChild(form);
    root.appendChild(summary);
    root.appendChild(error);
    root.appendChild(status);
    show(summary, false);
    show(error, false);
    container.appendChild(root);

    function showError(detail) {
      error.textContent = detail;
      show(error, Boolean(detail));
    }

    function setBusy(busy) {
      submitButton.disabled = busy;
      removeButton.disabled = busy;
      status.textContent = busy ? "Checking your gift card…" : "";
    }

    function showEntryForm() {
      show(form, true);
      show(numberLabel, true);
      show(pinLabel, true);
      prompt.textContent = "Pay with a Vii gift card";
    }

    function showPinOnlyForm(detail) {
      show(form, true);
      show(numberLabel, false); // the number is in memory; ask only for what is missing
      show(pinLabel, true);
      pinInput.value = "";
      prompt.textContent = detail || "Enter your PIN to apply more of your gift card.";
      pinInput.focus();
    }

    function showApplied(answer) {
      summaryText.textContent =
        "Vii " +
        answer.viiGiftCardNumber +
        " · applied " +
        money(answer.amountApplied) +
        " · remaining " +
        money(answer.availableBalance);
      show(summary, true);
      show(form, false);
      numberInput.value = "";
      pinInput.value = "";
    }

    function showRestored(saved) {
      if (!saved || !saved.shadowLast4 || !saved.amountApplied) {
        return;
      }
      summaryText.textContent =
        "Gift card ending " +
        saved.shadowLast4 +
        " · applied " +
        money(saved.amountApplied) +
        " · remaining " +
        money(saved.remaining) +
        " (enter your card again to change it)";
      show(summary, true);
      show(removeButton, false); // without the full code in memory there is nothing to release
    }

    function clearApplied() {
      appliedCode = null;
      cardNumber = null;
      pendingTotal = null;
      show(summary, false);
      show(removeButton, true);
      forget();
      showEntryForm();
    }

    function enqueue(work) {
      var next = queue.then(work, work);
      queue = next.then(
        function () {},
        function () {}
      );
      return next;
    }

    function accept(answer) {
      var previous = appliedCode;
      appliedCode = answer.shopifyGiftCardCode;
      pendingTotal = null;
      store(answer);
      showApplied(answer);
      show(removeButton, true);
      showError("");
      if (previous && previous !== appliedCode) {
        return Promise.resolve(removeCode(previous)).then(function () {
          return applyCode(appliedCode);
        });
      }
      if (previous !== appliedCode) {
        return Promise.resolve(applyCode(appliedCode));
      }
      return Promise.resolve();
    }

    function check(total, pin) {
      var body = {
        viiCardNumber: cardNumber,
        cartTotal: asDecimalString(total),
        checkoutToken: options.checkoutToken
      };
      if (pin) {
        body.viiCardPin = pin;
      }
      setBusy(true);
      return postJson(endpoints.checkBalance, body).then(function (result) {
        setBusy(false);
        if (result.ok) {
          return accept(result.data).then(function () {
            return result.data;
          });
        }
        if (result.data.code === "pin_required") {
          pendingTotal = total;
          showPinOnlyForm(result.data.detail);
          return null;
        }
        if (!appliedCode) {
          // Nothing is held, so a wrong number must be typed again, not kept.
          cardNumber = null;
          showEntryForm();
        }
        showError(problemDetail(result));
        return null;
      });
    }

    function onSubmit(event) {
      event.preventDefault();
      var pin = digitsOnly(pinInput.value);
      if (!numberLabel.hidden) {
        var typed = digitsOnly(numberInput.value);
        if (!/^[0-9]{12,19}$/.test(typed)) {
          showError("Enter the 12 to 19 digit number printed on your card.");
          return;
        }
        cardNumber = typed;
      }
      if (!cardNumber) {
        showEntryForm();
        return;
      }
      var total = pendingTotal !== null ? pendingTotal : getCartTotal();
      pinInput.value = "";
      enqueue(function () {
        return check(total, pin || null);
      });
    }

    function onCartTotalChange(newTotal) {
      var total = newTotal === undefined ? getCartTotal() : newTotal;
      if (!cardNumber || !appliedCode) {
        return Promise.resolve(null); // nothing applied yet: the next apply reads the cart
      }
      // Without the PIN: shrinking (and growing within the first hold) needs none.
      return enqueue(function () {
        return check(total, null);
      });
    }

    function remove() {
      return enqueue(function () {
        var code = appliedCode;
        if (!code) {
          clearApplied();
          return null;
        }
        setBusy(true);
        return postJson(endpoints.release, {
          checkoutToken: options.checkoutToken,
          shopifyGiftCardCode: code
        }).then(function (result) {
          setBusy(false);
          // 404: already released or expired server-side; the checkout must still drop it.
          if (!result.ok && result.status !== 404) {
            showError(problemDetail(result));
            return null;
          }
          clearApplied();
          showError("");
          return Promise.resolve(removeCode(code)).then(function () {
            return code;
          });
        });
      });
    }

    form.addEventListener("submit", onSubmit);
    removeButton.addEventListener("click", function () {
      remove();
    });
    showRestored(readStored());

    var widget = {
      onCartTotalChange: onCartTotalChange,
      remove: remove,
      destroy: function () {
        cardNumber = null;
        if (root.parentNode) {
          root.parentNode.removeChild(root);
        }
      }
    };
    lastWidget = widget;
    return widget;
  }

  global.GiftSync = {
    init: init,
    onCartTotalChange: function (newTotal) {
      return lastWidget ? lastWidget.onCartTotalChange(newTotal) : Promise.resolve(null);
    }
  };
})(window);
