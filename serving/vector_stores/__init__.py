"""`/v1/vector_stores`: collections as OpenAI's vector stores; attaching a file ingests it."""
