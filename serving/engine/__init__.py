"""The generation engine: the base model it serves, its vLLM process, and the client to it."""
