// Starts Swagger UI on the page's #swagger-ui element, with the schema URL the page names.
// A file rather than an inline script, so the page's Content-Security-Policy can forbid those.
(function () {
  'use strict';
  var root = document.getElementById('swagger-ui');
  window.ui = SwaggerUIBundle({
    url: root.dataset.schemaUrl,
    dom_id: '#swagger-ui',
    deepLinking: true,
    // No badge from validator.swagger.io: the page talks to the gateway only.
    validatorUrl: null,
    // Tokens and keys stay in the page's memory, not in localStorage.
    persistAuthorization: false,
    tryItOutEnabled: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout'
  });
})();
