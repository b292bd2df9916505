// giftsync operator console: the one script. Pages work without it; with it, a run's page
// follows the run live (progress, rate, time left) by polling its JSON every two seconds.
(function () {
  "use strict";
  var run = document.getElementById("run");
  if (!run || run.dataset.status === "succeeded" || run.dataset.status === "failed") {
    return;
  }
  function set(name, value) {
    var node = run.querySelector('[data-field="' + name + '"]');
    if (node) {
      node.textContent = value === null || value === undefined ? "—" : String(value);
    }
  }
  function counts(values) {
    return Object.keys(values).map(function (k) { return k + " " + values[k]; }).join(", ");
  }
  function poll() {
    fetch(run.dataset.progressUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) {
          return;
        }
        set("status", data.status);
        var pill = run.querySelector('[data-field="status"]');
        if (pill) {
          pill.className = "pill " + data.status;
        }
        set("done", data.done);
        set("total", data.total === null ? "?" : data.total);
        set("percent", data.percent === null ? "?" : data.percent);
        set("rate", data.ratePerSecond);
        set("left", data.secondsLeft);
        set("counts", counts(data.counts || {}));
        var bar = run.querySelector('[data-field="bar"]');
        if (bar && data.percent !== null) {
          bar.value = data.percent;
        }
        if (data.finished) {
          // The report (findings, skipped cards) is rendered by the server: fetch it once.
          window.location.reload();
          return;
        }
        window.setTimeout(poll, 2000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 1000);
})();
