"""The Mailgun-shaped HTTP API: Starlette routes, one module per resource, behind API keys."""
