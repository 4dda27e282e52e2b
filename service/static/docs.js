// Swagger UI for this service's OpenAPI document, from files the service serves itself (no CDN).
// "Authorize" takes the API key (X-API-Key or Bearer); the page's calls then carry it. It is kept in
// this page only (not stored), so a reload asks for it again.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
