"""Files -> documents -> chunks -> embeddings -> Chroma, and the `ingest` and `docs` commands."""
