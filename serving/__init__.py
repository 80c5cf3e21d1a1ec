"""The HTTP API, the per-request router, the vLLM client and the `ragtune` command."""
