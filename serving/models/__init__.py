"""`GET /v1/models`: the base model and the registered adapters."""
