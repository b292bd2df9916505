// Starts Redoc on /redoc (app/routers/docs.py). Redoc injects its styles at run time; the
// nonce of this script's own tag lets them past the page's Content-Security-Policy.
(function () {
  "use strict";
  var nonce = document.currentScript.nonce;
  var root = document.getElementById("redoc");
  Redoc.init(root.dataset.specUrl, { nonce: nonce }, root);
})();
