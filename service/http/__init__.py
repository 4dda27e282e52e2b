"""The HTTP layer: routes, limits, authentication, middleware, uploads, media types, answer schemas."""
