"""The REST API's routers, one module per resource (``/api/v1/<resource>``)."""
