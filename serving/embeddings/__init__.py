"""`POST /v1/embeddings`: the collection's embedding model in OpenAI's shape."""
