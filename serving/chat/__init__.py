"""POST /v1/chat/completions: OpenAI's chat API, routed between documents and adapters."""
