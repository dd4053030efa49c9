// Swagger UI for /openapi.json, from the files this service serves (no CDN).
// validatorUrl null: the default would load a badge from an online validator.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
  validatorUrl: null,
  showExtensions: true,
  showCommonExtensions: true,
});
