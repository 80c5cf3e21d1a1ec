"""The server: the HTTP API, the per-request router, prompting, the engine client and pool."""
