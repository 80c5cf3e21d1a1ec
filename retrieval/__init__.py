"""Query -> ranked evidence -> prompt context: the embedder, the Chroma store and search."""
