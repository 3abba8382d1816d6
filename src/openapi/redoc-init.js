// Starts ReDoc on the page's #redoc element, with the schema URL the page names.
// A file rather than an inline script, so the page's Content-Security-Policy can forbid those.
(function () {
  'use strict';
  var root = document.getElementById('redoc');
  // Fragments come from the services: their Markdown may hold HTML, which is sanitised.
  Redoc.init(root.dataset.schemaUrl, { sanitize: true }, root);
})();
